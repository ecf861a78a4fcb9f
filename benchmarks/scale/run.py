"""The scale benchmark: wall time and peak memory of each pipeline stage on generated data.

    python benchmarks/scale/run.py --items 1000000 --labels 10000 --dim 256

Data: `scale_data.py` (power-law labels, features clustered by label in a .npy that the config
reads as `data.features_path`), written in chunks, never whole in memory.

Stages, each in a fresh Python process (``python benchmarks/scale/scale_stages.py STAGE
WORKDIR``): generate (the data), train (`train_embedder`, `epochs` epochs), prototypes
(train-item embeddings into a memory-mapped .npy, then streaming `mean_prototypes`), build
(`build_index`), tag (`Tagger.load`, then `tag_items` over every item; P@1 and P@5 on the
held-out test split, next to always answering the most frequent labels).

Memory: each stage reports ``peak_rss_mb``, the VmHWM of /proc/self/status when it ends: the
exact high-water mark of the resident memory of that process (import of the libraries
included, ``startup_rss_mb``). Not ru_maxrss: Linux carries the parent's peak into a child's
ru_maxrss across fork and exec. VmHWM also counts pages of memory-mapped files, which the
kernel can drop at will; ``peak_anon_mb`` is the peak of the anonymous part alone (RssAnon,
sampled every 20 ms by a thread, so a shorter spike can be missed).

Results beside this script: scale.json, and scale.md (the summary it printed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks._common import BENCHMARKS, add_run_options, harness_parser, run_harness
from benchmarks.scale.scale_stages import STAGES, scale_config
from metricls.artifacts import read_json, write_json
from metricls.bench.machine import machine_info
from metricls.errors import InputError, MetriclsError

__all__ = ["STAGES", "bench_scale", "main", "markdown_summary"]

log = logging.getLogger("benchmarks.scale")
OUT = BENCHMARKS / "scale" / "scale.json"
STAGE_SCRIPT = Path(__file__).with_name("scale_stages.py")


# ---- the benchmark --------------------------------------------------------------------------
def bench_scale(*, items: int = 1_000_000, labels: int = 10_000, dim: int = 256,
                epochs: int = 1, overrides: Sequence[str] = (), alpha: float = 1.0,
                splits: Sequence[float] | None = None, out: str | Path = OUT,
                workdir: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Generate the data, run every stage in a fresh process, and write the JSON report.

    Args:
        items, labels, dim: size of the generated data.
        epochs: training epochs.
        overrides: config overrides, e.g. ``["index.backend=ivf"]`` (else the defaults: HNSW
            indexes, multi-similarity loss, ...).
        alpha: exponent of the power law of label frequencies (0: uniform).
        splits: (train, valid) shares of a random split column (default: the md5 split).
        out: the JSON report.
        workdir: where data and tagger go (kept); default a temporary folder, deleted after.
        seed: seed of the data generator.

    Returns:
        The report: params, machine, per-stage ``seconds``, ``peak_rss_mb``, ``peak_anon_mb``
        and details, and the test-split quality.
    """
    params = {"items": items, "labels": labels, "dim": dim, "epochs": epochs,
              "overrides": list(overrides), "alpha": alpha,
              "splits": None if splits is None else [float(x) for x in splits], "seed": seed}
    for name, low in (("items", 100), ("labels", 2), ("dim", 1), ("epochs", 1)):
        if isinstance(params[name], bool) or not isinstance(params[name], int) \
                or params[name] < low:
            raise InputError(f"{name}: expected an int >= {low}, got {params[name]!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < 100:
        raise InputError(f"alpha: expected a number in [0, 100), got {alpha!r}")
    if splits is not None and (len(splits) != 2 or min(splits) <= 0 or sum(splits) >= 1):
        raise InputError(f"splits: expected (train, valid) shares > 0 summing below 1, got "
                         f"{splits!r}")
    scale_config(Path("."), params)  # a bad override fails here, not in a stage
    stages: dict[str, Any] = {}
    with _workdir(workdir) as folder:
        write_json(folder / "params.json", params)
        for name in STAGES:
            stages[name] = _spawn(name, folder)
            done = stages[name]
            log.info("bench scale: %s done in %.1f s, peak RSS %.0f MB (anonymous %.0f MB)",
                     name, done["seconds"], done["peak_rss_mb"], done["peak_anon_mb"])
    result = {"params": params, "machine": machine_info() | {
                  "load_average_at_start": os.getloadavg()[0],
                  "omp_wait_policy": stage_env()["OMP_WAIT_POLICY"]},
              "memory_method": "per-stage process: VmHWM (peak RSS, file-backed pages included) "
                               "and sampled peak RssAnon, see benchmarks/scale/run.py",
              "dense_items_x_labels_gb": round(items * labels * 4 / 1e9, 1),
              "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
              "quality": stages["tag"].pop("quality"), "stages": stages}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    return result


def markdown_summary(result: dict[str, Any]) -> str:
    """The stages (time, peak RSS, peak anonymous memory) and the test quality as markdown."""
    p = result["params"]
    lines = [f"{p['items']:,} items x {p['labels']:,} labels x {p['dim']} dims, "
             f"{p['epochs']} epoch(s), ANN search tuned to recall 0.8, overrides "
             f"{p['overrides'] or 'none'}", "",
             "| stage | seconds | peak RSS MB | peak anonymous MB |", "|---|---|---|---|"]
    lines += [f"| {name} | {s['seconds']:,.1f} | {s['peak_rss_mb']:,.0f} | "
              f"{s['peak_anon_mb']:,.0f} |" for name, s in result["stages"].items()]
    lines += ["", "| test split | P@1 | P@5 |", "|---|---|---|"]
    lines += [f"| {name} | {q['P@1']:.4f} | {q['P@5']:.4f} |"
              for name, q in result["quality"].items()]
    return "\n".join(lines)


@contextlib.contextmanager
def _workdir(workdir: str | Path | None) -> Iterator[Path]:
    if workdir is not None:
        folder = Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="metricls-scale-") as tmp:
        yield Path(tmp)


def _spawn(name: str, folder: Path) -> dict[str, Any]:
    """Run a stage in a fresh Python process; its error line becomes a MetriclsError."""
    proc = subprocess.run([sys.executable, str(STAGE_SCRIPT), name, str(folder)],
                          capture_output=True, text=True, env=stage_env())
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        reason = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1])
        raise MetriclsError(f"bench scale: stage {name!r} failed: {reason}")
    return read_json(folder / f"stage-{name}.json")


def stage_env() -> dict[str, str]:
    """The environment of a stage: this one, with OMP_WAIT_POLICY=PASSIVE unless set, because
    OpenMP threads that spin while waiting make small torch ops up to 100x slower whenever
    another process holds a core (measured on the 2-core machine: 83 ms instead of 1 ms)."""
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/scale/run.py [options]``: run, write, print the markdown summary."""
    parser = harness_parser(__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--labels", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    add_run_options(parser, OUT, "the data and tagger")

    def body(args: argparse.Namespace) -> str:
        return markdown_summary(bench_scale(items=args.items, labels=args.labels, dim=args.dim,
                                            epochs=args.epochs, overrides=args.overrides,
                                            out=args.out, workdir=args.workdir))

    return run_harness(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
