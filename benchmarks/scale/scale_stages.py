"""One stage of the scale benchmark, in its own process, measuring its time and peak memory.

    python benchmarks/scale/scale_stages.py {generate,train,prototypes,build,tag} WORKDIR

`run.py` (`bench_scale`) starts one such process per stage, in order, on the same WORKDIR
(it holds ``params.json``); each writes ``stage-NAME.json`` and ``stage-NAME.log`` there.
What each stage does and how memory is measured: see `benchmarks/scale/run.py`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks.scale.scale_data import generate_data
from metricls import load_config
from metricls.artifacts import read_json, write_json
from metricls.config import Config
from metricls.errors import MetriclsError

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
    from metricls import train_embedder

    train_embedder(scale_config(folder, p), out=folder / "tagger")
    info = read_json(folder / "tagger" / "training.json")
    return {"fit_s": info["seconds"], "history": info["history"]}


def _prototypes(folder: Path, p: dict[str, Any]) -> dict[str, Any]:
    from metricls.build import embed_items  # internal: embeddings memory-mapped, as build does
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
    from metricls import build_index

    build_index(folder / "tagger")
    manifest = read_json(folder / "tagger" / "manifest.json")
    return {"build": manifest["build"], "valid": manifest["metrics"].get("valid", {})}


def _tag(folder: Path, p: dict[str, Any]) -> dict[str, Any]:
    from metricls import Tagger
    from metricls.data.dataset import read_config_items
    from metricls.evaluation import ranking_metrics, tag_items

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


def main(argv: list[str]) -> int:
    """``python benchmarks/scale/scale_stages.py STAGE WORKDIR``: one stage, for `bench_scale`."""
    if len(argv) != 2 or argv[0] not in STAGES:
        print(f"usage: python benchmarks/scale/scale_stages.py {{{','.join(STAGES)}}} WORKDIR",
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
