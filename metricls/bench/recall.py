"""bench_recall: build time, memory, recall@1/@10 vs exact, QPS and latency of each ANN backend.

Data: a tagger's prototypes queried by its test-item embeddings (when a tagger is given), and
synthetic prototype sets that look like real embeddings: points of a 16-dimensional mixture
of 256 Gaussian clusters (cluster scales drawn log-uniform), mapped linearly into d = 256
dimensions, plus 5% isotropic noise, then L2-normalised. Queries come from the same process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metricls.ann import make_index, recall_at_k_vs_exact
from metricls.ann.scann_index import import_scann
from metricls.artifacts import write_json
from metricls.bench.machine import machine_info
from metricls.errors import InputError, MetriclsError
from metricls.prototypes import normalize_rows

SETTINGS: dict[str, list[dict[str, Any]]] = {
    "flat": [{}],
    "hnsw": [{"ef_search": ef} for ef in (16, 32, 64, 128, 256)],
    "ivf": [{"nprobe": p} for p in (1, 4, 16, 64)],
    "scann": [{"leaves_to_search": s} for s in (8, 32, 128)],
    "ivf-pq": [{"nprobe": p} for p in (4, 16, 64)],
    "ivf-pq128": [{"nprobe": p} for p in (4, 16, 64)],
    "sharded-flat": [{}],
    "sharded-ivf": [{"nprobe": p} for p in (1, 4, 16)],
}
# variants benchmarked beside the backends' defaults: (backend, build parameters)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ivf-pq": ("ivf", {"pq_m": 32}),  # 32 bytes a vector instead of 1 KB at d = 256
    "ivf-pq128": ("ivf", {"pq_m": 128}),  # 128 bytes a vector
    "sharded-flat": ("sharded", {"base": "flat", "shards": 4}),
    "sharded-ivf": ("sharded", {"base": "ivf", "shards": 4}),
}
DEFAULT_BACKENDS = ("flat", "hnsw", "ivf", "scann")


def synthetic_vectors(n: int, dim: int = 256, *, seed: int = 0, latent: int = 16,
                      clusters: int = 256) -> np.ndarray:
    """(n, dim) float32 normalised vectors with clusters and a low intrinsic dimension."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    scales = np.exp(rng.uniform(np.log(0.1), np.log(0.6), size=clusters)).astype(np.float32)
    which = rng.integers(0, clusters, size=n)
    z = centres[which] + scales[which, None] * rng.standard_normal((n, latent), np.float32)
    lift = rng.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    x = z @ lift + 0.05 * rng.standard_normal((n, dim), np.float32)
    return normalize_rows(x)


def _time_searches(index: Any, queries: np.ndarray, k: int, singles: int) -> dict[str, float]:
    start = time.perf_counter()
    index.search(queries, k)
    batched = time.perf_counter() - start
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
              singles: int = 200) -> list[dict[str, Any]]:
    """All settings of all `backends` on one vector set; flat gives the exact reference."""
    exact = make_index("flat", vectors.shape[1])
    exact.build(vectors)
    k = min(10, len(vectors))
    _, truth = exact.search(queries, k)
    rows = []
    for backend in backends:
        kind, build_params = VARIANTS.get(backend, (backend, {}))
        index = make_index(kind, vectors.shape[1], **build_params)
        start = time.perf_counter()
        index.build(vectors)
        build_s = time.perf_counter() - start
        for params in SETTINGS[backend]:
            if params:
                index.set_search_params(**params)
            _, ids = index.search(queries, k)
            rows.append({"set": name, "n": len(vectors), "backend": backend, "params": params,
                         "build_s": build_s, "memory_bytes": index.memory_bytes(),
                         "recall@1": recall_at_k_vs_exact(ids[:, :1], truth[:, :1]),
                         "recall@10": recall_at_k_vs_exact(ids, truth),
                         **_time_searches(index, queries, k, singles)})
    return rows


def bench_recall(*, tagger: str | Path | None = None, quick: bool = False,
                 out: str | Path = "benchmarks/recall/recall.json", threads: int = 0,
                 backends: Sequence[str] | None = None,
                 sizes: Sequence[int] | None = None) -> dict[str, Any]:
    """Run the benchmark and write JSON (and a recall-vs-QPS PNG beside it).

    Args:
        tagger: a built tagger folder whose prototypes and test items are also benchmarked.
        quick: small sets only (1e3, 1e4 vectors, 200 queries), for tests.
        out: the JSON path.
        threads: FAISS threads (0 = all cores).
        backends: names of `SETTINGS` (default flat, hnsw, ivf and, if installed, scann;
            flat, the exact reference, is always run).
        sizes: synthetic set sizes (default 1e3 to 1e6, or 1e3 and 1e4 with `quick`).
    """
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    backends = _backends(backends)
    sizes = sizes or ((1_000, 10_000) if quick else (1_000, 10_000, 100_000, 1_000_000))
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1_000 for n in sizes):
        raise InputError(f"sizes: expected ints >= 1000, got {list(sizes)}")
    n_queries = 200 if quick else 1_000
    rows = []
    if tagger is not None:
        rows += _tagger_rows(Path(tagger), backends)
    for n in sizes:
        vectors = synthetic_vectors(n + n_queries, seed=n)
        rows += bench_set(f"synthetic-{n}", vectors[:n], vectors[n:], backends=backends,
                          singles=min(200, n_queries))
    summary = _summary(rows)
    machine = machine_info() | {"threads": threads or os.cpu_count()}
    result = {"machine": machine, "rows": rows, "summary": summary}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    _plot(rows, out.with_suffix(".png"))
    return result


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
    test = read_config_items(tagger.config.data).subset("test")
    if len(test) == 0:
        raise InputError(f"{folder}: its data has no test items to query with")
    queries = tagger.embed(test)
    return bench_set(f"tagger:{folder.name}", tagger.prototypes, queries, backends=backends)


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

