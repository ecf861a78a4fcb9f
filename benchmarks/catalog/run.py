"""The catalog benchmark: items/s of `tag_catalog` with each engine on one catalog, outputs
compared.

    python benchmarks/catalog/run.py --tagger index/debtags-lexical --data debtags

Each engine's time is the whole call (tagger loaded, file read, tagged, Parquet written; for
Ray also starting and stopping the local cluster and its actors). Both outputs are read back
and compared: ids and labels equal, largest score difference. Results beside this script:
catalog.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks._common import BENCHMARKS, harness_parser, run_harness
from metricls.artifacts import write_json
from metricls.bench.machine import machine_info
from metricls.catalog import ENGINES, TagOptions, read_tags, tag_catalog

__all__ = ["bench_catalog", "compare_tags", "main", "markdown_summary"]

OUT = BENCHMARKS / "catalog" / "catalog.json"


def compare_tags(a: pa.Table, b: pa.Table) -> dict[str, Any]:
    """Whether two `read_tags` tables hold the same rows, ids and labels; largest score gap."""
    same_rows = a.column("row").equals(b.column("row")) and a.column("id").equals(b.column("id"))
    same_labels = a.column("labels").equals(b.column("labels"))
    gap = None
    if same_rows and same_labels:
        flat = [t.column("scores").combine_chunks().flatten().to_numpy() for t in (a, b)]
        gap = float(np.abs(flat[0] - flat[1]).max(initial=0.0))
    return {"same_rows_and_ids": same_rows, "same_labels": same_labels, "max_score_diff": gap}


def bench_catalog(tagger: str | Path, data: str | Path = "debtags", *, num_actors: int = 2,
                  batch_size: int = 1024, out: str | Path | None = OUT
                  ) -> dict[str, Any]:
    """Tag `data` with `tagger` on each engine into temp folders; write the JSON report to `out`.

    Returns:
        {"machine", "tagger", "data", "runs": [summary per engine], "agreement": {...}}.
    """
    options = TagOptions(batch_size=batch_size, num_actors=num_actors)
    load_before = os.getloadavg()  # other work on the machine skews both engines' times
    with tempfile.TemporaryDirectory(prefix="metricls-catalog-") as tmp:
        runs = [tag_catalog(tagger, data, Path(tmp) / engine, engine=engine, options=options)
                for engine in ENGINES]
        agreement = compare_tags(*(read_tags(Path(tmp) / engine) for engine in ENGINES))
    result = {"machine": machine_info() | {
                  "load_average_1min": [load_before[0], os.getloadavg()[0]]},
              "tagger": str(tagger), "data": str(data), "runs": runs, "agreement": agreement}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
    return result


def markdown_summary(result: dict[str, Any]) -> str:
    """A markdown table: one row per engine."""
    lines = ["| engine | items | seconds | items/s |", "|---|---|---|---|"]
    for run in result["runs"]:
        actors = f" ({run['options']['num_actors']} actors)" if run["engine"] == "ray" else ""
        lines.append(f"| {run['engine']}{actors} | {run['rows']:,} | {run['seconds']:.1f} | "
                     f"{run['items_per_s']:,.0f} |")
    load = result["machine"]["load_average_1min"]
    lines.append(f"\nagreement: {result['agreement']}; 1-min load average {load[0]:.1f} "
                 f"before, {load[1]:.1f} after, on {result['machine']['cpus']} CPUs")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/catalog/run.py [options]``: run, write, print the table."""
    parser = harness_parser(__doc__)
    parser.add_argument("--tagger", type=Path, default=Path("index/debtags-lexical"),
                        help="a built tagger folder")
    parser.add_argument("--data", default="debtags", help="the catalog: a file or dataset name")
    parser.add_argument("--num-actors", type=int, default=2, help="Ray actors")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON report")

    def body(args: argparse.Namespace) -> str:
        return markdown_summary(bench_catalog(args.tagger, args.data, num_actors=args.num_actors,
                                              batch_size=args.batch_size, out=args.out))

    return run_harness(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
