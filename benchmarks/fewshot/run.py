"""The few-shot benchmark: labels held out of training, added back from a few examples or
zero-shot.

    python benchmarks/fewshot/run.py configs/debtags.yaml --full index/debtags

Labels: among the train-split labels with at least max(shots) train items and `MIN_TEST` test
items, sorted by train count (then name), cut into `holdout` bins of consecutive ranks
(`numpy.array_split`); one label is drawn from each bin with the seed, so the held-out labels
spread over the frequencies. A tagger is trained with them excluded (`data.exclude_labels`);
each is then added back with `Tagger.add_label` from its first s train items in a seeded
permutation (so the 1 examples are among the 5, the 5 among the 20), or zero-shot from its
name alone or from its name and description (`Tagger.add_label` with no examples embeds
the label's text; the description comes from the config's `data.label_table`). Each variant
is scored on the test split (or `--split valid`, where settings are chosen) next to a tagger
of the same config trained on every label.

Metrics, on the test items, with every tagger's top 10:
- ``R@10 held-out``: the mean over the held-out labels of their label-wise recall@10, i.e.
  (test items carrying the label that rank it in their top 10) / (test items carrying it);
- ``P@k share``: P@k counting only hits on held-out labels (their share of the tagger's P@k);
- ``P@1``, ``P@5``, ``R@10``: the usual metrics over all test labels (labels a tagger does
  not know count as misses).

Results beside this script: fewshot.json and fewshot.md (the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks._common import BENCHMARKS, harness_parser, metric_table, run_harness
from metricls import Tagger, build_index, load_config, train_embedder
from metricls.artifacts import write_json
from metricls.config import Config, to_dict
from metricls.data.dataset import Dataset
from metricls.errors import InputError
from metricls.evaluation import ranking_metrics
from metricls.metrics import label_recall_at_k, precision_at_k
from metricls.pipeline.tag import score

__all__ = ["bench_fewshot", "choose_holdout", "main", "markdown_table", "parse_shots"]

log = logging.getLogger("benchmarks.fewshot")
OUT = BENCHMARKS / "fewshot" / "fewshot.json"
MIN_TEST = 3  # test items a held-out label needs, so its recall is not all-or-nothing


def choose_holdout(data: Dataset, n: int, *, min_train: int, min_test: int = MIN_TEST,
                   seed: int = 0) -> list[str]:
    """`n` labels spread over frequencies, drawn one per frequency bin (see the module doc).

    Raises:
        InputError: fewer than `n` labels have `min_train` train and `min_test` test items.
    """
    train_counts = data.vocab.counts
    test_counts = np.asarray(data.labels("test").sum(axis=0)).ravel()
    eligible = np.flatnonzero((train_counts >= min_train) & (test_counts >= min_test))
    if n < 1 or len(eligible) < n:
        raise InputError(f"--holdout: expected 1 to {len(eligible)} labels (those with >= "
                         f"{min_train} train and >= {min_test} test items), got {n}")
    names = data.vocab.names
    ranked = sorted(eligible, key=lambda i: (train_counts[i], names[i]))
    rng = np.random.default_rng(seed)
    return [names[int(rng.choice(part))] for part in np.array_split(np.array(ranked), n)]


def bench_fewshot(config: str | Path, *, holdout: int = 50, shots: Sequence[int] = (1, 5, 20),
                  out: str | Path = OUT, full: str | Path | None = None,
                  overrides: Sequence[str] = (), seed: int = 0,
                  work: str | Path | None = None, split: str = "test",
                  reuse: bool = False) -> dict[str, Any]:
    """Run the few-shot benchmark and write its JSON (and a markdown table beside it).

    Args:
        config: the config of both taggers (YAML), with `overrides` ("key=value").
        holdout: how many labels to hold out.
        shots: example counts to add each held-out label back from.
        out: the JSON report; the table goes to the same path with suffix ``.md``.
        full: a built tagger of the same config trained on every label (default: train one).
        seed: seeds the label choice and the example draws.
        work: folder for the trained taggers (default: a temporary folder, deleted).
        split: the split scored: "test" (reported) or "valid" (for choosing settings).
        reuse: use the held-out tagger that an earlier run left in `work` (its labels are
            checked), instead of training one.

    Returns:
        The report: chosen labels, one row per variant, per-label recalls, timings.
    """
    shots = sorted({_positive(s) for s in shots})
    if split not in ("test", "valid"):
        raise InputError(f"--split: expected test or valid, got {split!r}")
    cfg = load_config(config, overrides)
    data = Dataset.load(cfg.data)
    labels = choose_holdout(data, holdout, min_train=shots[-1], seed=seed)
    with tempfile.TemporaryDirectory(prefix="metricls-fewshot-") as tmp:
        folder = Path(work) if work is not None else Path(tmp)
        held_cfg = dataclasses.replace(cfg, name=f"{cfg.name}-holdout", data=dataclasses.replace(
            cfg.data, exclude_labels=(*cfg.data.exclude_labels, *labels)))
        start = time.perf_counter()
        if reuse:
            _check_reusable(folder / "holdout", data, labels)
        else:
            build_index(train_embedder(held_cfg, out=folder / "holdout", overwrite=True))
        train_s = time.perf_counter() - start
        full_tagger = _full_tagger(cfg, full, folder / "full")
        rows, per_label, add_s = _variants(folder / "holdout", full_tagger, data, labels, shots,
                                           seed, split)
    result = {"config": str(config), "overrides": list(overrides), "split": split,
              "holdout": holdout,
              "shots": shots, "seed": seed, "min_train": shots[-1], "min_test": MIN_TEST,
              "full": str(full) if full is not None else "trained by the benchmark",
              "labels": [{"name": n, "train": int(data.vocab.counts[data.vocab.index(n)]),
                          "test": t} for n, t in zip(labels, _test_counts(data, labels))],
              "rows": rows, "per_label": per_label,
              "timings": {"train_holdout_s": round(train_s, 1),
                          "add_label_ms_mean": round(1e3 * float(np.mean(add_s)), 2)}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    out.with_suffix(".md").write_text(markdown_table(result) + "\n")
    return result


def _variants(holdout_dir: Path, full: Tagger, data: Dataset, labels: list[str],
              shots: list[int], seed: int,
              split: str) -> tuple[list[dict], dict[str, list], list[float]]:
    """Score the full tagger, the bare holdout tagger, zero-shot and each shot count."""
    test = getattr(data, split)
    base = Tagger.load(holdout_dir)
    emb = base.model.embed(test.texts, test.features, cache=True)  # one model for every variant
    full_emb = full.model.embed(test.texts, test.features, cache=True)
    rows = [_score("fully trained (labels in training)", full, full_emb, test, labels),
            _score("held out, not added", base, emb, test, labels)]
    pools = _example_pools(data, labels, seed)
    add_s: list[float] = []
    variants = [("zero-shot (name)", 0, False)]
    if data.descriptions:
        variants.append(("zero-shot (name + description)", 0, True))
    variants += [(f"{s}-shot{' + items' if items else ''}", s, items)
                 for s in shots for items in (False, True)]
    for name, s, items in variants:
        tagger = Tagger.load(holdout_dir)
        if name == "zero-shot (name)":  # forget the label table: the name alone
            tagger._state = tagger.state.replace(descriptions={})
        for label, pool in zip(labels, pools):
            t0 = time.perf_counter()
            if s == 0:  # zero-shot: the label's text ("a::b-c" -> "a b c: description")
                tagger.add_label(label)
            else:
                tagger.add_label(label, [data.train.texts[i] for i in pool[:s]], add_items=items)
            add_s.append(time.perf_counter() - t0)
        rows.append(_score(name, tagger, emb, test, labels))
        log.info("%s: held-out R@10 %.4f", name, rows[-1]["R@10 held-out"])
    per_label = {row["variant"]: row.pop("per_label") for row in rows}
    return rows, per_label, add_s


def _score(variant: str, tagger: Tagger, emb: np.ndarray, test: Any,
           labels: list[str]) -> dict[str, Any]:
    """The metrics of the module doc for one tagger on the test embeddings."""
    _, ids = score(tagger.state, emb, 10, test.texts)
    Y, _ = tagger.vocab.to_csr(test.labels)
    known = [tagger.vocab.index(n) for n in labels if n in tagger.vocab]
    recall = dict.fromkeys(labels, 0.0)
    if known:
        support, found = label_recall_at_k(ids, Y, 10)
        recall |= {tagger.vocab.names[i]: float(found[i] / support[i]) for i in known
                   if support[i] > 0}
    items = Y.sum(axis=0).A1 if known else None
    if items is not None:  # labels without items in these rows have no recall (valid split)
        recall = {n: r for n, r in recall.items()
                  if n not in tagger.vocab or items[tagger.vocab.index(n)] > 0}
    held_ids = np.where(np.isin(ids, known), ids, -1)
    report = ranking_metrics(ids, test.labels, tagger.vocab)
    return {"variant": variant, "R@10 held-out": float(np.mean(list(recall.values()))),
            "P@1 share": precision_at_k(held_ids, Y, 1),
            "P@5 share": precision_at_k(held_ids, Y, 5),
            "P@1": report["P@1"], "P@5": report["P@5"], "R@10": report["R@10"],
            "per_label": [round(recall[n], 4) if n in recall else None for n in labels]}


def _example_pools(data: Dataset, labels: list[str], seed: int) -> list[np.ndarray]:
    """For each label, its train items (row numbers) in a seeded random order."""
    Y, _ = data.vocab.to_csr(data.train.labels)
    Y = Y.tocsc()
    return [np.random.default_rng([seed, j]).permutation(Y[:, data.vocab.index(n)].indices)
            for j, n in enumerate(labels)]


def _test_counts(data: Dataset, labels: list[str]) -> list[int]:
    counts = np.asarray(data.labels("test").sum(axis=0)).ravel()
    return [int(counts[data.vocab.index(n)]) for n in labels]


def _check_reusable(folder: Path, data: Dataset, labels: list[str]) -> None:
    """InputError unless `folder` is a built tagger of every label of `data` but `labels`."""
    if not (folder / "scoring.json").is_file():
        raise InputError(f"--reuse: {folder} holds no built tagger; run without --reuse first")
    known = set(Tagger.load(folder).labels)
    if known != set(data.vocab.names) - set(labels):
        raise InputError(f"--reuse: {folder} was trained on other labels than this run holds "
                         "out; run without --reuse")


def _full_tagger(cfg: Config, full: str | Path | None, folder: Path) -> Tagger:
    """The given fully trained tagger (warning if its config differs), or one trained now."""
    if full is None:
        return build_index(train_embedder(cfg, out=folder, overwrite=True))
    tagger = Tagger.load(full)
    mine, theirs = to_dict(cfg), to_dict(tagger.config)
    differ = [k for k in mine if k != "name" and mine[k] != theirs.get(k)]
    if differ:
        warnings.warn(f"{full}: its config differs from the benchmark's in {differ}; the "
                      "'fully trained' row is then not a like-for-like reference", stacklevel=3)
    return tagger


def parse_shots(text: str) -> list[int]:
    """"1,5,20" -> [1, 5, 20]; anything else raises InputError."""
    try:
        return [_positive(int(part)) for part in text.split(",")]
    except ValueError:
        raise InputError(f"--shots: expected comma-separated positive ints, e.g. 1,5,20, got "
                         f"{text!r}") from None


def _positive(s: Any) -> int:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
        raise InputError(f"--shots: expected positive ints, got {s!r}")
    return int(s)


def markdown_table(result: dict[str, Any]) -> str:
    """The report's rows as a markdown table."""
    keys = ("R@10 held-out", "P@1 share", "P@5 share", "P@1", "P@5", "R@10")
    corner = f"{result['holdout']} held-out labels ({result.get('split', 'test')})"
    return "\n".join(metric_table(corner, keys, [(r["variant"], r) for r in result["rows"]]))


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/fewshot/run.py CONFIG [options]``: run, write, print the table."""
    parser = harness_parser(__doc__)
    parser.add_argument("config", type=Path, help="the config of both taggers (YAML)")
    parser.add_argument("--holdout", type=int, default=50, help="labels held out")
    parser.add_argument("--shots", default="1,5,20", help="comma-separated example counts")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="the JSON report (the table goes beside it, .md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override, e.g. train.epochs=5")
    parser.add_argument("--full", type=Path, default=None,
                        help="built tagger of CONFIG on all labels (else trained)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep the trained taggers here")
    parser.add_argument("--split", default="test", help="test (reported) or valid (to choose)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the held-out tagger an earlier run left in --work")

    def body(args: argparse.Namespace) -> str:
        return markdown_table(bench_fewshot(args.config, holdout=args.holdout,
                                            shots=parse_shots(args.shots), out=args.out,
                                            full=args.full, overrides=args.overrides,
                                            seed=args.seed, work=args.work, split=args.split,
                                            reuse=args.reuse))

    return run_harness(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
