"""The MiniLM runtime benchmark: torch against ONNX Runtime (fp32 and int8), alone and end to end.

    python benchmarks/minilm/run.py index/debtags

For each runtime (`encoder.minilm.runtime`), in one run on the tagger's test split: the
encoder alone (texts/s of `MiniLMBackbone.encode`, no cache), and the whole tagger with its
MiniLM switched to that runtime (texts/s of `Tagger.predict_scores` at k=10, encoding included,
no cache; P@1, P@5, PSP@5 and their difference from torch). The tagger was trained on torch
embeddings: this measures the runtime swapped in at tagging time. A runtime whose export is
not cached yet is exported before its clock starts. Results beside this script: minilm.json
and minilm.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks._common import BENCHMARKS, harness_parser, run_harness
from metricls import Tagger
from metricls.artifacts import write_json
from metricls.bench.machine import machine_info
from metricls.data.dataset import Dataset
from metricls.encoders.backbone import MiniLMBackbone
from metricls.encoders.onnx_minilm import RUNTIMES
from metricls.errors import InputError
from metricls.evaluation import ranking_metrics
from metricls.validation import parse_csv

__all__ = ["bench_minilm", "main", "markdown_table"]

OUT = BENCHMARKS / "minilm" / "minilm.json"
METRICS = ("P@1", "P@5", "PSP@5")


def bench_minilm(tagger: str | Path, *, runtimes: Sequence[str] = RUNTIMES,
                 limit: int | None = None, out: str | Path = OUT) -> dict[str, Any]:
    """Time and score each runtime on the tagger's test split; write and return the JSON."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise InputError(f"--runtimes: expected some of {list(RUNTIMES)}, got {list(runtimes)}")
    loaded = Tagger.load(tagger)
    minilm = [b for b in loaded.model.backbones if isinstance(b, MiniLMBackbone)]
    if not minilm:
        raise InputError(f"{tagger}: its encoder has no minilm backbone")
    data = Dataset.load(loaded.config.data)
    test = data.test if limit is None else data.test.subset(np.arange(min(limit, len(data.test))))
    texts = list(test.texts)
    rows = []
    for runtime in runtimes:
        backbone = minilm[0]
        backbone.runtime = runtime
        backbone.encode(texts[:8])  # exports (once per machine) and loads before the clock
        start = time.perf_counter()
        backbone.encode(texts)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        _, ids = loaded.predict_scores(texts, k=10)
        tag_s = time.perf_counter() - start
        report = ranking_metrics(ids, test.labels, loaded.vocab)
        rows.append({"runtime": runtime, "encoder_texts_per_s": round(len(texts) / encode_s, 1),
                     "end_to_end_texts_per_s": round(len(texts) / tag_s, 1),
                     **{m: round(report[m], 4) for m in METRICS}})
    base = next((r for r in rows if r["runtime"] == "torch"), rows[0])
    for row in rows:
        row["encoder_speedup"] = round(row["encoder_texts_per_s"] / base["encoder_texts_per_s"],
                                       2)
        row["end_to_end_speedup"] = round(
            row["end_to_end_texts_per_s"] / base["end_to_end_texts_per_s"], 2)
        row["P@5_minus_torch"] = round(row["P@5"] - base["P@5"], 4)
    result = {"machine": machine_info(("torch", "onnxruntime", "sentence-transformers")),
              "tagger": str(tagger), "texts": len(texts),
              "max_seq_length": minilm[0].max_seq_length, "rows": rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    out.with_suffix(".md").write_text(markdown_table(result) + "\n")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """One row per runtime."""
    lines = [f"{result['texts']:,} test texts of `{result['tagger']}` (max_seq_length "
             f"{result['max_seq_length']}), {result['machine']['cpus']} CPUs", "",
             "| runtime | encoder texts/s | x torch | tagger texts/s | x torch | P@1 | P@5 | "
             "PSP@5 | P@5 - torch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['runtime']} | {r['encoder_texts_per_s']:,.0f} | "
                     f"{r['encoder_speedup']:.2f} | {r['end_to_end_texts_per_s']:,.0f} | "
                     f"{r['end_to_end_speedup']:.2f} | {r['P@1']:.4f} | {r['P@5']:.4f} | "
                     f"{r['PSP@5']:.4f} | {r['P@5_minus_torch']:+.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/minilm/run.py TAGGER [options]``: run, write, print the table."""
    parser = harness_parser(__doc__)
    parser.add_argument("tagger", type=Path, help="a built tagger with a minilm backbone")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="first test items only")
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON report")

    def body(args: argparse.Namespace) -> str:
        return markdown_table(bench_minilm(args.tagger, runtimes=parse_csv(args.runtimes),
                                           limit=args.limit, out=args.out))

    return run_harness(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
