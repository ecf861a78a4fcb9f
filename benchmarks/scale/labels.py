"""How tagging cost grows with the number of labels: one text and a batch, on generated texts.

    python benchmarks/scale/labels.py --labels 600,10000,100000 --items 200000

For each label count L, the same number of generated items (`label_texts`: power-law labels,
each label owning a few words that its items' texts mix with shared noise words, and every
label carried by at least items / L of them) trains the fast config (`configs/debtags-
lexical.yaml`: the n-gram backbone, the reranker with TF-IDF prototypes; `--epochs`, 1 by
default: what a text costs to tag does not depend on how long the model trained), which
build-index indexes (`--set` overrides more of it); then, on the held-out test texts:

- ``one_text_ms``: p50 and p99 of `Tagger.predict([text], k=10)`, one text at a time, after a
  warm-up; and where that time goes (medians of the same calls taken apart: ``embed``, the
  ``search`` of prototypes, items and TF-IDF cosines, and ``rank``, the candidate features and
  the trees);
- ``batch_texts_per_s``: `predict` of `--batch` texts at once, best of 3;
- the sizes behind them: labels, TF-IDF nonzeros, candidates scored per text, folder MB.

Results beside this script: label-growth.json and label-growth.md (the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks._common import BENCHMARKS, add_run_options, harness_parser, run_harness
from benchmarks.scale.scale_data import draw_labels, label_probabilities
from metricls import Tagger, build_index, load_config, train_embedder
from metricls.artifacts import write_json
from metricls.bench.machine import machine_info
from metricls.data.dataset import read_config_items
from metricls.errors import InputError
from metricls.pipeline.tag import combine, neighbours

__all__ = ["bench_label_growth", "label_texts", "main", "markdown_table"]

log = logging.getLogger("benchmarks.scale.labels")
OUT = BENCHMARKS / "scale" / "label-growth.json"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "debtags-lexical.yaml"
WORDS_PER_LABEL, NOISE_WORDS = 4, 500


def label_texts(path: Path, *, n_items: int, n_labels: int, alpha: float = 1.0,
                seed: int = 0) -> Path:
    """Write ``items.jsonl`` (id, text, labels) of `n_items` generated items to `path`.

    Item i carries label i mod `n_labels` and 0 to 3 more drawn by power law (so every label
    has at least n_items // n_labels items); its text is 2 of each label's
    `WORDS_PER_LABEL` words and 4 noise words, shuffled. Labels are named ``f<l mod 20>::l<l>``.
    """
    if n_items < 2 * n_labels:
        raise InputError(f"--items: expected at least 2 x the labels ({2 * n_labels}), "
                         f"got {n_items}")
    rng = np.random.default_rng(seed)
    extra = draw_labels(rng, n_items, label_probabilities(n_labels, alpha))
    keep = rng.random(extra.nnz) < 0.6  # 1-4 drawn -> about 0-3 extra
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n_items):
            lo, hi = extra.indptr[i], extra.indptr[i + 1]
            labels = sorted({i % n_labels, *extra.indices[lo:hi][keep[lo:hi]].tolist()})
            words = [f"t{label}w{j}" for label in labels
                     for j in rng.choice(WORDS_PER_LABEL, 2, replace=False)]
            words += [f"n{j}" for j in rng.integers(0, NOISE_WORDS, 4)]
            rng.shuffle(words)
            fh.write(json.dumps({"id": f"i{i}", "text": " ".join(words),
                                 "labels": [f"f{label % 20}::l{label}" for label in labels]})
                     + "\n")
    return path


def bench_label_growth(*, labels: Sequence[int] = (600, 10_000, 100_000), items: int = 200_000,
                       epochs: int = 1, queries: int = 300, batch: int = 2_000,
                       overrides: Sequence[str] = (), out: str | Path = OUT,
                       workdir: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Train, build and time each label count (module doc); write the JSON report and the
    markdown table beside it."""
    if not labels or any(n < 2 for n in labels):
        raise InputError(f"--labels: expected label counts >= 2, got {list(labels)}")
    if items < 2 * max(labels):
        raise InputError(f"--items: expected at least 2 x the labels ({2 * max(labels)}), "
                         f"got {items}")
    if queries < 1 or batch < 1:
        raise InputError(f"--queries and --batch: expected >= 1, got {queries} and {batch}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="metricls-labels-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        for n_labels in labels:
            rows.append(_one(root / f"labels-{n_labels}", n_labels, items=items, epochs=epochs,
                             queries=queries, batch=batch, overrides=overrides, seed=seed))
            log.info("%d labels: %s", n_labels, rows[-1]["one_text_ms"])
    result = {"config": CONFIG.name, "overrides": list(overrides), "items": items,
              "epochs": epochs, "queries": queries,
              "batch": batch, "seed": seed, "machine": machine_info(), "rows": rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    out.with_suffix(".md").write_text(markdown_table(result) + "\n")
    return result


def _one(folder: Path, n_labels: int, *, items: int, epochs: int, queries: int, batch: int,
         overrides: Sequence[str], seed: int) -> dict[str, Any]:
    data = label_texts(folder / "items.jsonl", n_items=items, n_labels=n_labels, seed=seed)
    cfg = load_config(CONFIG, [f"name=labels-{n_labels}", f"data.path={data}",
                               "data.id_column=id", "data.text_columns=[text]",
                               "data.label_column=labels", "data.label_table=null",
                               f"train.epochs={epochs}", f"train.patience={epochs}",
                               f"train.seed={seed}", *overrides])
    start = time.perf_counter()
    train_embedder(cfg, out=folder / "tagger", overwrite=True)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    build_index(folder / "tagger")
    build_s = time.perf_counter() - start
    tagger = Tagger.load(folder / "tagger")
    texts = read_config_items(cfg.data).subset("test").texts
    one = texts[:queries]
    for text in one[:20]:  # warm-up
        tagger.predict([text], k=10)
    total, parts = [], {"embed": [], "search": [], "rank": []}
    state = tagger.state
    for text in one:
        t0 = time.perf_counter()
        tagger.predict([text], k=10)
        total.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        emb = tagger.embed([text])
        t1 = time.perf_counter()
        found = neighbours(state, emb, 10, [text])
        t2 = time.perf_counter()
        combine(state, found, 10, state.scoring)
        t3 = time.perf_counter()
        for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[name].append(seconds)
    many = (texts * (batch // max(len(texts), 1) + 1))[:batch]
    best = min(_timed(tagger.predict, many) for _ in range(3))
    size = sum(p.stat().st_size for p in (folder / "tagger").rglob("*") if p.is_file())
    return {"labels": n_labels, "vocabulary": len(tagger.labels), "items": items,
            "train_items": state.trained_items, "train_s": round(train_s, 1),
            "build_s": round(build_s, 1),
            "one_text_ms": {"p50": _ms(np.median(total)), "p99": _ms(np.quantile(total, 0.99))},
            "one_text_parts_ms": {name: _ms(np.median(v)) for name, v in parts.items()},
            "batch_texts_per_s": round(batch / best, 1),
            "tfidf_nonzeros": int(state.tfidf.centroids.nnz) if state.tfidf is not None else 0,
            "candidates_scored": max(state.scoring.candidates, state.reranker.depth)
            if state.reranker is not None else state.scoring.candidates,
            "prototype_backend": state.proto_index.backend,
            "folder_mb": round(size / 1e6, 1)}


def _timed(fn: Any, texts: list[str]) -> float:
    start = time.perf_counter()
    fn(texts, k=10)
    return time.perf_counter() - start


def _ms(seconds: float) -> float:
    return round(1e3 * float(seconds), 3)


def markdown_table(result: dict[str, Any]) -> str:
    lines = [f"{result['items']:,} generated items, config {result['config']}, "
             f"{result['epochs']} epoch(s); one text: p50 of {result['queries']} texts, k=10",
             "", "| labels | one text p50 ms | p99 ms | embed | search | rank | batch texts/s "
             "| TF-IDF nonzeros | build s | folder MB |", "|---" * 10 + "|"]
    for r in result["rows"]:
        p = r["one_text_parts_ms"]
        lines.append(f"| {r['vocabulary']:,} | {r['one_text_ms']['p50']:.2f} | "
                     f"{r['one_text_ms']['p99']:.2f} | {p['embed']:.2f} | {p['search']:.2f} | "
                     f"{p['rank']:.2f} | {r['batch_texts_per_s']:,.0f} | "
                     f"{r['tfidf_nonzeros']:,} | {r['build_s']:.0f} | {r['folder_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/scale/labels.py [options]``: run, write, print the table."""
    parser = harness_parser(__doc__)
    parser.add_argument("--labels", default="600,10000,100000",
                        help="label counts, comma-separated")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--queries", type=int, default=300, help="texts tagged one at a time")
    parser.add_argument("--batch", type=int, default=2_000, help="texts tagged at once")
    add_run_options(parser, OUT, "the data and taggers")

    def body(args: argparse.Namespace) -> str:
        try:
            counts = [int(x) for x in args.labels.split(",")]
        except ValueError:
            raise InputError(f"--labels: expected comma-separated ints, got "
                             f"{args.labels!r}") from None
        return markdown_table(bench_label_growth(
            labels=counts, items=args.items, epochs=args.epochs, queries=args.queries,
            batch=args.batch, overrides=args.overrides, out=args.out, workdir=args.workdir))

    return run_harness(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
