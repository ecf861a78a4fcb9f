"""bench_scale: wall time and peak memory of each pipeline stage on generated data of any size.

Data: `metricls.bench.scale_data` (power-law labels, features clustered by label in a .npy
that the config reads as `data.features_path`), written in chunks, never whole in memory.

Stages, each in a fresh Python process (``python -m metricls.bench.scale STAGE WORKDIR``):
generate (the data), train (`train_embedder`, `epochs` epochs), prototypes (train-item
embeddings into a memory-mapped .npy, then streaming `mean_prototypes`), build (`build_index`),
tag (`Tagger.load`, then `tag_items` over every item; P@1 and P@5 on the held-out test split,
next to always answering the most frequent labels).

Memory: each stage reports ``peak_rss_mb``, the VmHWM of /proc/self/status when it ends: the
exact high-water mark of the resident memory of that process (import of the libraries
included, ``startup_rss_mb``). Not ru_maxrss: Linux carries the parent's peak into a child's
ru_maxrss across fork and exec. VmHWM also counts pages of memory-mapped files, which the
kernel can drop at will; ``peak_anon_mb`` is the peak of the anonymous part alone (RssAnon,
sampled every 20 ms by a thread, so a shorter spike can be missed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metricls.artifacts import read_json, write_json
from metricls.bench.machine import machine_info
from metricls.bench.scale_data import generate_data
from metricls.config import Config, load_config
from metricls.errors import InputError, MetriclsError

log = logging.getLogger(__name__)
STAGES = ("generate", "train", "prototypes", "build", "tag")


def scale_config(folder: Path, params: dict[str, Any]) -> Config:
    """The config the stages share: a `features` backbone over the generated files, ANN search
    tuned to recall@k 0.8 against exact search, the defaults otherwise, then
    `params["overrides"]` (``KEY=VALUE`` strings).

    Why 0.8, not the default 0.99: the generated items have a high intrinsic dimension, so HNSW
    over 800,000 of them reaches recall 0.90 only at ef_search 1024 (1.4 ms a query on 2 cores,
    23 minutes to tag a million items) and 0.82 at ef_search 256 (0.4 ms).
    """
    files = {"data.path": folder / "items.jsonl", "data.features_path": folder / "features.npy"}
    epochs = params["epochs"]
    base = [f"{key}={json.dumps(str(path))}" for key, path in files.items()] + [
        "name=scale", "data.id_column=id", "data.text_columns=[]", "data.label_column=labels",
        "encoder.backbones=[features]", f"train.epochs={epochs}", f"train.patience={epochs}",
        "index.target_recall=0.8"]
    if params["splits"] is not None:
        base.append("data.split_column=split")
    return load_config(None, [*base, *params["overrides"]])


# ---- stages (each runs in its own process) --------------------------------------------------
def _generate(folder: Path, p: dict[str, Any]) -> dict[str, Any]:
    return generate_data(folder, n_items=p["items"], n_labels=p["labels"], dim=p["dim"],
                         alpha=p["alpha"], splits=p["splits"], seed=p["seed"])


def _train(folder: Path, p: dict[str, Any]) -> dict[str, Any]:
    from metricls.training.trainer import train_embedder

    train_embedder(scale_config(folder, p), out=folder / "tagger")
    info = read_json(folder / "tagger" / "training.json")
    return {"fit_s": info["seconds"], "history": info["history"]}


def _prototypes(folder: Path, p: dict[str, Any]) -> dict[str, Any]:
    from metricls.build import embed_items
    from metricls.data.dataset import Dataset
    from metricls.encoders.model import EmbeddingModel
    from metricls.prototypes import mean_prototypes

    t0 = time.perf_counter()
    data = Dataset.load(scale_config(folder, p).data)
    y_train = data.labels("train")
    model = EmbeddingModel.load(folder / "tagger" / "encoder")
    t1 = time.perf_counter()
    emb = embed_items(model, data.train, folder, "embeddings-train")
    t2 = time.perf_counter()
    prototypes, counts = mean_prototypes(emb, y_train)
    t3 = time.perf_counter()
    mapped = isinstance(emb, np.memmap)
    del emb
    (folder / "embeddings-train.npy").unlink(missing_ok=True)
    return {"load_s": round(t1 - t0, 2), "embed_s": round(t2 - t1, 2),
            "prototypes_s": round(t3 - t2, 2), "embeddings_memory_mapped": mapped,
            "prototypes_shape": list(prototypes.shape),
            "labels_with_items": int((counts > 0).sum())}


def _build(folder: Path, p: dict[str, Any]) -> dict[str, Any]:
    from metricls.build import build_index

    build_index(folder / "tagger")
    manifest = read_json(folder / "tagger" / "manifest.json")
    return {"build": manifest["build"], "valid": manifest["metrics"].get("valid", {})}


def _tag(folder: Path, p: dict[str, Any]) -> dict[str, Any]:
    from metricls.data.dataset import read_config_items
    from metricls.evaluation import ranking_metrics, tag_items
    from metricls.tagger import Tagger

    t0 = time.perf_counter()
    tagger = Tagger.load(folder / "tagger")
    items = read_config_items(tagger.config.data)
    t1 = time.perf_counter()
    tagged = tag_items(tagger, items, k=5)
    t2 = time.perf_counter()
    test = np.flatnonzero(items.split == "test")
    truth = [items.labels[i] for i in test]
    prior = np.tile(np.arange(min(5, len(tagger.vocab)), dtype=np.int64), (len(test), 1))
    quality = {name: {key: round(v, 4) for key, v in
                      ranking_metrics(ids, truth, tagger.vocab, ks=(1, 5)).items()
                      if key in ("P@1", "P@5", "R@5")}
               for name, ids in (("metricls", tagged.ids[test]), ("most_frequent", prior))}
    return {"load_s": round(t1 - t0, 2), "tag_s": round(t2 - t1, 2), "items_tagged": len(items),
            "items_per_s": round(len(items) / (t2 - t1), 1), "timings": tagged.timings,
            "n_test": len(test), "quality": quality}


STAGE_FUNCS: dict[str, Callable[[Path, dict[str, Any]], dict[str, Any]]] = {
    "generate": _generate, "train": _train, "prototypes": _prototypes, "build": _build,
    "tag": _tag}


# ---- memory ---------------------------------------------------------------------------------
def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM, VmRSS, RssAnon, ...) in MiB."""
    with open("/proc/self/status") as fh:
        match = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    if match is None:
        raise MetriclsError(f"/proc/self/status has no {field} (bench scale needs Linux)")
    return int(match.group(1)) / 1024


class AnonPeak:
    """The highest RssAnon seen by a thread polling /proc/self/status every `interval` s."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_mb("RssAnon"))

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, status_mb("RssAnon"))


def run_stage(name: str, folder: Path) -> dict[str, Any]:
    """Run one stage in this process and write ``stage-NAME.json`` with its measurements (and
    ``stage-NAME.log``, metricls's log lines with times)."""
    params = read_json(folder / "params.json")
    logging.basicConfig(filename=folder / f"stage-{name}.log", level=logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", force=True)
    logging.getLogger("metricls").setLevel(logging.INFO)
    if name != "generate":  # load the libraries first: startup memory is reported apart
        import metricls.build
        import metricls.evaluation  # noqa: F401
    startup = status_mb("VmRSS")
    start = time.perf_counter()
    with AnonPeak() as anon:
        result = STAGE_FUNCS[name](folder, params)
    result = {"seconds": round(time.perf_counter() - start, 2),
              "peak_rss_mb": round(status_mb("VmHWM"), 1), "peak_anon_mb": round(anon.peak, 1),
              "startup_rss_mb": round(startup, 1), "load_average_1min": os.getloadavg()[0],
              **result}
    write_json(folder / f"stage-{name}.json", result)
    return result


# ---- the benchmark --------------------------------------------------------------------------
def bench_scale(*, items: int = 1_000_000, labels: int = 10_000, dim: int = 256,
                epochs: int = 1, overrides: Sequence[str] = (), alpha: float = 1.0,
                splits: Sequence[float] | None = None, out: str | Path = "bench/scale.json",
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
                               "and sampled peak RssAnon, see metricls/bench/scale.py",
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
    proc = subprocess.run([sys.executable, "-m", "metricls.bench.scale", name, str(folder)],
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


def main(argv: list[str]) -> int:
    """``python -m metricls.bench.scale STAGE WORKDIR``: one stage, for `bench_scale`."""
    if len(argv) != 2 or argv[0] not in STAGES:
        print(f"usage: python -m metricls.bench.scale {{{','.join(STAGES)}}} WORKDIR",
              file=sys.stderr)
        return 2
    try:
        run_stage(argv[0], Path(argv[1]))
    except MetriclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
