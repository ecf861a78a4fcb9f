"""The tail ordering's weight: what each `index.tail_weight` gives a built tagger, head to tail.

    python benchmarks/tail/run.py index/debtags                  # valid: where it is chosen
    python benchmarks/tail/run.py index/debtags --split test     # test: report once

The first five tags are the reranker's five most probable; the places after them go to the
best of its `TAIL_DEPTH` candidates by probability / propensity^weight (`scoring.with_tail`).
For each weight (`--weights`), on the tagger's own data: P@1, P@5, PSP@5 (the same for every
weight, by construction), PSP@10, R@10, macro R@10, and recall@10 of the head, torso and tail
thirds of the labels by training count (micro, and macro for the tail), with how many true
assignments each third has.

On valid the probabilities are out of fold: build-index fits the reranker on the validation
split, so its own valid probabilities are in-sample and flatter the tail (they are reported
beside, as "in-sample"); `fit.out_of_fold` refits its trees on half the queries and scores the
other half. On test they are the tagger's own.

It imports the pipeline's own steps (`tag.neighbours`, `tag.candidates`, `tag.tail_ranked`,
`fit.out_of_fold`): it searches and scores the candidates once, then ranks them under every
weight, as `Tagger.predict` would.

Results beside this script: tail-SPLIT.json and tail-SPLIT.md (the table).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks._common import BENCHMARKS, harness_parser, metric_table, run_harness
from metricls import Tagger
from metricls.artifacts import write_json
from metricls.data.dataset import Dataset
from metricls.errors import InputError
from metricls.metrics import (
    label_recall_at_k,
    macro_recall_at_k,
    precision_at_k,
    psp_at_k,
    recall_at_k,
)
from metricls.pipeline.fit import out_of_fold, truth
from metricls.pipeline.scoring import TAIL_DEPTH
from metricls.pipeline.tag import candidates, neighbours, tail_ranked
from metricls.report.analysis import frequency_buckets

WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0)


def bench_tail(tagger: Tagger, name: str, *, split: str = "valid",
               weights: Sequence[float] = WEIGHTS, seed: int = 0) -> dict[str, Any]:
    """The metrics of each tail weight on `split` (valid: out of fold, and in-sample);
    `name` says which tagger in the report."""
    check_split(split)
    state = tagger.state
    if state.reranker is None:
        raise InputError("tagger: the tail ordering needs a reranker (index.rerank: true)")
    if state.scoring.added_mask is not None:
        raise InputError("tagger: it has labels added after training; measure a built tagger")
    items = getattr(Dataset.load(tagger.config.data), split)
    emb = tagger.model.embed(items.texts, items.features, cache=True)
    Y = sp.csr_matrix(tagger.vocab.to_csr(items.labels)[0])
    depth = state.reranker.depth
    wide = max(depth, TAIL_DEPTH)  # what `predict` scores for top-10 with the tail ordering
    found = neighbours(state, emb, wide, items.texts)
    cand = candidates(state, found, state.scoring, wide)
    sources = {"own": state.reranker.score(cand.features)}
    if split == "valid":
        oof = out_of_fold(cand, truth(cand, Y), depth, seed)
        if oof is None:
            raise InputError("tagger: a validation fold has no true (or no false) candidate")
        sources = {"out of fold": oof, "in-sample": sources["own"]}
    rows = []
    for source, probabilities in sources.items():
        for weight in weights:
            _, ids = tail_ranked(probabilities, cand.ids, (depth, cand.ids.shape[1]),
                                 TAIL_DEPTH, weight, state.propensities, 10)
            rows.append({"probabilities": source, "weight": weight,
                         **_metrics(ids, Y, state.vocab.counts, state.propensities)})
    return {"tagger": name, "split": split,
            "queries": len(emb), "candidates": TAIL_DEPTH, "seed": seed, "rows": rows}


def _metrics(ids: np.ndarray, Y: sp.csr_matrix, counts: np.ndarray,
             props: np.ndarray) -> dict[str, float]:
    support, found = label_recall_at_k(ids, Y, 10)
    head, torso, tail = frequency_buckets(counts, support, found)[:3]
    return {"P@1": precision_at_k(ids, Y, 1), "P@5": precision_at_k(ids, Y, 5),
            "PSP@5": psp_at_k(ids, Y, 5, props), "PSP@10": psp_at_k(ids, Y, 10, props),
            "R@10": recall_at_k(ids, Y, 10), "macro R@10": macro_recall_at_k(ids, Y, 10),
            "head R@10": head["micro_recall"], "torso R@10": torso["micro_recall"],
            "tail R@10": tail["micro_recall"], "tail macro R@10": tail["macro_recall"],
            "tail assignments": tail["test_assignments"]}


def markdown_table(result: dict[str, Any]) -> str:
    """The report's rows as a markdown table."""
    keys = ("P@1", "P@5", "PSP@5", "PSP@10", "R@10", "macro R@10", "head R@10", "torso R@10",
            "tail R@10", "tail macro R@10")
    lines = metric_table(f"{result['split']}: probabilities, tail weight", keys,
                         [(f"{r['probabilities']}, {r['weight']:g}", r) for r in result["rows"]])
    tail = result["rows"][0]["tail assignments"]
    return "\n".join(lines) + f"\n\n{result['queries']} queries; {tail} tail assignments.\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/tail/run.py TAGGER [options]``: run, write, print the table."""
    parser = harness_parser(__doc__)
    parser.add_argument("tagger", type=Path, help="a built tagger folder with a reranker")
    parser.add_argument("--split", default="valid", help="valid (to choose) or test (to report)")
    parser.add_argument("--weights", default=",".join(f"{w:g}" for w in WEIGHTS),
                        help="comma-separated tail weights (>= 0)")
    parser.add_argument("--seed", type=int, default=0, help="the out-of-fold trees' seed")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON report (default: tail-SPLIT.json beside this script)")

    def body(args: argparse.Namespace) -> str:
        weights = parse_weights(args.weights)
        check_split(args.split)  # before the tagger loads
        result = bench_tail(Tagger.load(args.tagger), args.tagger.name, split=args.split,
                            weights=weights, seed=args.seed)
        out = args.out or BENCHMARKS / "tail" / f"tail-{args.split}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
        table = markdown_table(result)
        out.with_suffix(".md").write_text(table)
        return table

    return run_harness(parser, argv, body)


def check_split(split: str) -> None:
    """The splits the harness reads: valid (to choose) and test (to report)."""
    if split not in ("valid", "test"):
        raise InputError(f"--split: expected valid or test, got {split!r}")


def parse_weights(text: str) -> list[float]:
    """'0,1,1.5' -> [0.0, 1.0, 1.5]; one clear error for anything else."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        weights = []
    if not weights or not all(np.isfinite(w) and w >= 0 for w in weights):
        raise InputError(f"--weights: expected comma-separated numbers >= 0, got {text!r}")
    return weights


if __name__ == "__main__":
    sys.exit(main())
