"""bench_recall: build time, memory, recall@1/@10 vs exact, QPS and latency of each ANN backend.

Data, any of:
- the user's own set: texts embedded by a tagger (`texts` + `tagger`) or a .npy of vectors;
  `queries` of its rows, drawn at random, query the rest. Its rows are named `real-<file>-<n>`.
- a synthetic set made to look like the user's (`matched`: its covariance spectrum and local
  intrinsic dimension, see `metricls.bench.vectors`), named `synthetic-like-<file>-<n>`;
- a tagger's prototypes queried by its test-item embeddings (`tagger` alone);
- generic synthetic sets of `sizes` (a low-dimensional Gaussian mixture lifted to 256-d).
Each set's profile (spectrum, LID) is written beside its rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metricls.ann import auto_params, choose_backend, make_index, recall_at_k_vs_exact, tune_index
from metricls.ann.scann_index import import_scann
from metricls.artifacts import write_json
from metricls.bench.machine import machine_info
from metricls.bench.vectors import (
    embed_texts,
    load_vectors,
    matched_synthetic,
    profile_vectors,
    synthetic_vectors,
)
from metricls.errors import InputError, MetriclsError

SETTINGS: dict[str, list[dict[str, Any]]] = {
    "flat": [{}],
    "hnsw": [{"ef_search": ef} for ef in (16, 32, 64, 96, 128, 192, 256)],
    "ivf": [{"nprobe": p} for p in (1, 4, 16, 64)],
    "scann": [{"leaves_to_search": s} for s in (8, 16, 32, 48, 56, 64, 80, 96, 128)],
    "ivf-pq": [{"nprobe": p} for p in (4, 16, 64)],
    "ivf-pq128": [{"nprobe": p} for p in (4, 16, 64)],
    "ivf-pq-rerank": [{"nprobe": p, "rerank": r} for p in (16, 64) for r in (1, 4, 10)],
    "hnsw-sq8": [{"ef_search": ef} for ef in (32, 48, 64, 80, 96, 112, 128, 160, 192)],
    "auto": [{}],  # what build-index --backend auto --target-recall 0.95 builds and tunes
    "sharded-flat": [{}],
    "sharded-ivf": [{"nprobe": p} for p in (1, 4, 16)],
}
# variants benchmarked beside the backends' defaults: (backend, build parameters)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ivf-pq": ("ivf", {"pq_m": 32}),  # 32 bytes a vector instead of 1 KB at d = 256
    "ivf-pq128": ("ivf", {"pq_m": 128}),  # 128 bytes a vector
    # 64-byte codes, the best 1, 4 or 10 x k re-scored from float vectors (on disk once loaded)
    "ivf-pq-rerank": ("ivf", {"pq_m": 64, "rerank": 4}),
    # 8-bit codes in the graph, the best 2 x k re-scored (what "auto" builds for large sets)
    "hnsw-sq8": ("hnsw", {"storage": "sq8", "rerank": 2, "ef_construction": 160}),
    "sharded-flat": ("sharded", {"base": "flat", "shards": 4}),
    "sharded-ivf": ("sharded", {"base": "ivf", "shards": 4}),
}
DEFAULT_BACKENDS = ("flat", "hnsw", "ivf", "scann")
AUTO_TARGET = 0.95  # the recall@10 "auto" is tuned for
BATCH_REPEATS = 3


def _time_searches(index: Any, queries: np.ndarray, k: int, singles: int) -> dict[str, float]:
    """Batched QPS (the best of `BATCH_REPEATS` after a warm-up search, since one timing on a
    shared machine varies by 20%), single-query QPS and latency percentiles."""
    index.search(queries, k)
    batched = np.inf
    for _ in range(BATCH_REPEATS):
        start = time.perf_counter()
        index.search(queries, k)
        batched = min(batched, time.perf_counter() - start)
    lat = []
    for q in queries[:singles]:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1e3
    return {"qps_batched": len(queries) / batched, "qps_single": len(lat) / (lat_ms.sum() / 1e3),
            "latency_p50_ms": float(np.percentile(lat_ms, 50)),
            "latency_p99_ms": float(np.percentile(lat_ms, 99))}


def bench_set(name: str, vectors: np.ndarray, queries: np.ndarray, *, backends: tuple[str, ...],
              singles: int = 200, tune_queries: np.ndarray | None = None) -> list[dict[str, Any]]:
    """All settings of all `backends` on one vector set; flat gives the exact reference.

    "auto" builds what `build-index --backend auto` would (see `auto_params`) and tunes it on
    `tune_queries` (other rows than `queries`) for recall@10 0.95, as build-index does on
    valid, then measures it on `queries`.
    """
    exact = make_index("flat", vectors.shape[1])
    exact.build(vectors)
    k = min(10, len(vectors))
    _, truth = exact.search(queries, k)
    rows = []
    for backend in backends:
        if backend == "auto":
            kind = choose_backend("auto", len(vectors))
            build_params = auto_params(kind, len(vectors))
        else:
            kind, build_params = VARIANTS.get(backend, (backend, {}))
        index = make_index(kind, vectors.shape[1], **build_params)
        start = time.perf_counter()
        index.build(vectors)
        build_s = time.perf_counter() - start
        settings = SETTINGS[backend]
        if backend == "auto":
            if tune_queries is None:
                raise InputError("backends: auto needs tuning queries (tune_queries)")
            tuned = tune_index(index, tune_queries, k=k, target_recall=AUTO_TARGET, exact=exact)
            settings = [{"chose": kind, **build_params, **tuned["params"]}]
        for setting in settings:
            params = {key: v for key, v in setting.items() if key in index.search_param_names}
            if params:
                index.set_search_params(**params)
            _, ids = index.search(queries, k)
            rows.append({"set": name, "n": len(vectors), "backend": backend, "params": setting,
                         "build_s": build_s, "memory_bytes": index.memory_bytes(),
                         "recall@1": recall_at_k_vs_exact(ids[:, :1], truth[:, :1]),
                         "recall@10": recall_at_k_vs_exact(ids, truth),
                         **_time_searches(index, queries, k, singles)})
    return rows


def bench_recall(*, tagger: str | Path | None = None, texts: str | Path | None = None,
                 vectors: str | Path | None = None, queries: int = 1_000,
                 size: int | None = None, matched: bool = False, quick: bool = False,
                 out: str | Path = "benchmarks/recall/recall.json", threads: int = 0,
                 backends: Sequence[str] | None = None,
                 sizes: Sequence[int] | None = None) -> dict[str, Any]:
    """Run the benchmark and write JSON (and a recall-vs-QPS PNG beside it).

    Args:
        tagger: a built tagger folder: it embeds `texts`; without `texts`, its prototypes
            queried by its test items are benchmarked.
        texts: the user's texts (one per line, or a JSONL/CSV/Parquet `text` field), embedded
            by `tagger`: the set `real-<file name>-<n>`.
        vectors: instead of texts, a .npy file of (n, dim) vectors (normalised here).
        queries: rows of the user's set, drawn at random (seed 0), that query the others (as
            many others tune the "auto" backend).
        size: search at most this many of the user's other rows (drawn at random).
        matched: also benchmark a synthetic set of the same size, spectrum and local intrinsic
            dimension as the user's (`synthetic-like-...`), to see if it predicts it.
        quick: small generic synthetic sets only (1e3, 1e4 vectors, 200 queries), for tests.
        out: the JSON path.
        threads: FAISS threads (0 = all cores).
        backends: names of `SETTINGS` (default flat, hnsw, ivf and, if installed, scann;
            flat, the exact reference, is always run).
        sizes: generic synthetic set sizes (default 1e3 to 1e6, or 1e3 and 1e4 with `quick`;
            none when the user's own set is given, unless asked for).
    """
    from metricls.ann.faiss_lib import faiss

    own = _own_set(tagger, texts, vectors, queries, size)
    if matched and own is None:
        raise InputError("matched: needs the user's own set (texts with a tagger, or vectors)")
    if threads:
        faiss.omp_set_num_threads(threads)
    backends = _backends(backends)
    if sizes is None and own is None:
        sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000, 1_000_000)
    sizes = sizes or ()
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1_000 for n in sizes):
        raise InputError(f"sizes: expected ints >= 1000, got {list(sizes)}")
    n_queries = 200 if quick else 1_000
    rows: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    if own is not None:
        name, base, asked, tuning = own
        profiles[name] = profile_vectors(base)
        rows += bench_set(name, base, asked, backends=backends, tune_queries=tuning,
                          singles=min(200, len(asked)))
        if matched:
            like = name.replace("real-", "synthetic-like-", 1)
            synthetic, power = matched_synthetic(profiles[name], len(base) + 2 * len(asked))
            base, asked, tuning = np.split(synthetic, [len(base), len(base) + len(asked)])
            profiles[like] = profile_vectors(base) | {"fitted_power": power}
            rows += bench_set(like, base, asked, backends=backends, tune_queries=tuning,
                              singles=min(200, len(asked)))
    elif tagger is not None:
        rows += _tagger_rows(Path(tagger), backends)
    for n in sizes:
        synthetic = synthetic_vectors(n + 2 * n_queries, seed=n)
        base, asked, tuning = np.split(synthetic, [n, n + n_queries])
        rows += bench_set(f"synthetic-{n}", base, asked, backends=backends,
                          tune_queries=tuning, singles=min(200, n_queries))
    machine = machine_info() | {"threads": threads or os.cpu_count()}
    result = {"machine": machine, "rows": rows, "summary": _summary(rows)}
    if profiles:
        result["profiles"] = profiles
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    _plot(rows, out.with_suffix(".png"))
    return result


def _own_set(tagger: str | Path | None, texts: str | Path | None, vectors: str | Path | None,
             queries: int, size: int | None) -> tuple[str, np.ndarray, np.ndarray,
                                                      np.ndarray] | None:
    """(name, base vectors, query vectors, tuning vectors) of the user's set, or None when
    none is given: `queries` random rows query, `queries` others tune "auto", and the rest (at
    most `size` of them, drawn at random) are searched."""
    if texts is not None and vectors is not None:
        raise InputError("texts, vectors: give one of them, not both")
    if texts is not None and tagger is None:
        raise InputError("texts: needs a tagger to embed them (--tagger FOLDER)")
    source = texts if texts is not None else vectors
    if source is None:
        return None
    for value, name, low in ((queries, "queries", 1), (size, "size", 10)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < low):
            raise InputError(f"{name}: expected an int >= {low}, got {value!r}")
    everything = embed_texts(tagger, texts) if texts is not None else load_vectors(vectors)
    if len(everything) < 2 * queries + 10:
        raise InputError(f"{source}: {len(everything)} rows; expected at least 2 x queries + 10"
                         f" = {2 * queries + 10} (queries={queries} rows query the others and "
                         "as many tune the auto index)")
    order = np.random.default_rng(0).permutation(len(everything))
    base = np.sort(order[2 * queries:2 * queries + size] if size else order[2 * queries:])
    stem = Path(source).name.split(".")[0]
    return (f"real-{stem}-{len(base)}", everything[base], everything[order[:queries]],
            everything[order[queries:2 * queries]])


def _backends(names: Sequence[str] | None) -> tuple[str, ...]:
    """The backends to run, flat first; unknown names raise InputError."""
    if names is None:
        return tuple(b for b in DEFAULT_BACKENDS if b != "scann" or _has_scann())
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        raise InputError(f"backends: unknown {unknown}; expected names of {list(SETTINGS)}")
    return ("flat", *dict.fromkeys(name for name in names if name != "flat"))


def _tagger_rows(folder: Path, backends: tuple[str, ...]) -> list[dict[str, Any]]:
    from metricls.data.dataset import read_config_items
    from metricls.tagger import Tagger

    tagger = Tagger.load(folder)
    items = read_config_items(tagger.config.data)
    test, valid = items.subset("test"), items.subset("valid")
    if len(test) == 0:
        raise InputError(f"{folder}: its data has no test items to query with")
    if "auto" in backends and len(valid) == 0:
        raise InputError(f"{folder}: backends: auto is tuned on valid items; its data has none")
    tuning = tagger.embed(valid) if "auto" in backends else None
    return bench_set(f"tagger:{folder.name}", tagger.prototypes, tagger.embed(test),
                     backends=backends, tune_queries=tuning)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per set and backend: the fastest setting with recall@10 >= 0.95, and its speed-up."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        flat = next(r for r in rows if r["set"] == name and r["backend"] == "flat")
        best = {}
        for r in rows:
            if r["set"] != name or r["recall@10"] < 0.95:
                continue
            if r["backend"] not in best or r["qps_batched"] > best[r["backend"]]["qps_batched"]:
                best[r["backend"]] = r
        out[name] = {b: {"params": r["params"], "recall@10": round(r["recall@10"], 4),
                         "qps_batched": round(r["qps_batched"], 1),
                         "speedup_vs_flat": round(r["qps_batched"] / flat["qps_batched"], 2),
                         "memory_mb": round(r["memory_bytes"] / 2**20, 1),
                         "build_s": round(r["build_s"], 2)} for b, r in best.items()}
    return out


def markdown_summary(result: dict[str, Any]) -> str:
    """The summary as a markdown table: per set and backend, the fastest setting at recall@10
    >= 0.95, with its speed-up over exact search, memory and build time."""
    lines = ["| set | backend | params | recall@10 | QPS (batched) | x exact | memory MB "
             "| build s |", "|---|---|---|---|---|---|---|---|"]
    for name, backends in result["summary"].items():
        for backend, r in backends.items():
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
            lines.append(f"| {name} | {backend} | {params} | {r['recall@10']:.3f} | "
                         f"{r['qps_batched']:,.0f} | {r['speedup_vs_flat']:.1f} | "
                         f"{r['memory_mb']:,.1f} | {r['build_s']:.1f} |")
    return "\n".join(lines)


def _has_scann() -> bool:
    try:
        import_scann()
    except MetriclsError:
        return False
    return True


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    sets = list(dict.fromkeys(r["set"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.5), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for backend in dict.fromkeys(r["backend"] for r in rows):
            pts = [(r["recall@10"], r["qps_batched"]) for r in rows
                   if r["set"] == name and r["backend"] == backend]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=backend)
        ax.set(title=name, xlabel="recall@10 vs exact", ylabel="queries/s (batched)",
               yscale="log")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)

