"""What each ANN lever is worth on a real vector set, one configuration per call.

    python benchmarks/recall/levers.py VECTORS.npy "hnsw(32, 80)" --out levers-1m.jsonl

VECTORS.npy: normalised embeddings (e.g. `metricls.bench.vectors.embed_texts` of the Debian
texts of scripts/make_debian_texts.py with the debtags-lexical tagger, saved with np.save).
A fixed permutation (seed 0) gives --n base rows (1,000,000) and the next --queries (1,000)
as queries; exact top-10 ids and exact search's batched QPS are cached beside the file. Each
configuration appends one JSON line per search setting: recall@10 against exact, batched
QPS, its ratio to exact search, build seconds. The configurations are plain FAISS / ScaNN,
to measure a lever before it goes into metricls.ann:

    hnsw(M, efC, storage)          IndexHNSWFlat, or IndexHNSWSQ 8-bit with storage="sq8"
    hnsw_refine(M, efC, storage)   the same, the best k_factor x 10 re-scored exactly
    proj_hnsw(dims, M, efC)        HNSW over the top `dims` principal directions, re-scored
    scann_(leaves, sample, reorder, soar)   ScaNN tree + AH, optional SOAR spilling
    ivf(nlist, M, codes, refine)   IVF with an HNSW coarse quantiser (index_factory)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from metricls.ann.faiss_lib import faiss

K = 10


def load(path: Path, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       float]:
    """(base, queries, exact top-10 ids, exact batched QPS)."""
    x = np.load(path, mmap_mode="r")
    if len(x) < n + n_queries:
        raise SystemExit(f"{path}: {len(x)} rows; expected at least --n + --queries = "
                         f"{n + n_queries}")
    perm = np.random.default_rng(0).permutation(len(x))
    base = np.ascontiguousarray(x[np.sort(perm[:n])])
    queries = np.ascontiguousarray(x[perm[n:n + n_queries]])
    cache = path.with_name(f"{path.stem}-exact-{n}-{n_queries}.npz")
    if cache.exists():
        saved = np.load(cache)
        return base, queries, saved["ids"], float(saved["qps"])
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    exact.search(queries, K)
    start = time.perf_counter()
    ids = exact.search(queries, K)[1]
    qps = n_queries / (time.perf_counter() - start)
    np.savez(cache, ids=ids, qps=qps)
    return base, queries, ids, qps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("vectors", type=Path)
    parser.add_argument("config", help='e.g. "hnsw_refine(32, 100)"')
    parser.add_argument("--out", type=Path, default=Path("levers-1m.jsonl"))
    parser.add_argument("--n", type=int, default=1_000_000, help="rows searched")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=100_000,
                        help="rows that train quantisers")
    args = parser.parse_args(argv)
    base, queries, truth, exact_qps = load(args.vectors, args.n, args.queries)
    d = base.shape[1]

    def report(name: str, build_s: float, settings: list) -> None:
        for label, search in settings:
            search()  # warm
            start = time.perf_counter()
            ids = search()
            qps = len(queries) / (time.perf_counter() - start)
            recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth)]))
            row = {"name": name, "setting": label, "recall": round(recall, 4),
                   "qps": round(qps), "x": round(qps / exact_qps, 1),
                   "build_s": round(build_s, 1), "n": len(base)}
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def graph(m: int, efc: int, storage: str, dims: int | None = None):
        inner = faiss.IndexHNSWFlat(dims or d, m, faiss.METRIC_INNER_PRODUCT) \
            if storage == "flat" else faiss.IndexHNSWSQ(
                dims or d, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = efc
        return inner

    def timed_build(index) -> float:
        start = time.perf_counter()
        index.train(base[:args.sample])
        index.add(base)
        return time.perf_counter() - start

    def hnsw(m: int, efc: int, storage: str = "flat") -> None:
        index = graph(m, efc, storage)
        build = timed_build(index)

        def at(ef):
            return lambda: (setattr(index.hnsw, "efSearch", ef), index.search(queries, K)[1])[1]
        report(f"hnsw-{storage}-M{m}-efc{efc}", build,
               [(f"ef{ef}", at(ef)) for ef in (32, 64, 96, 128, 192, 256)])

    def refined(name: str, inner, index, build: float, efs, kfs) -> None:
        def at(ef, kf):
            def search():
                inner.hnsw.efSearch, index.k_factor = ef, kf
                return index.search(queries, K)[1]
            return search
        report(name, build, [(f"ef{ef}-kf{kf}", at(ef, kf)) for ef in efs for kf in kfs])

    def hnsw_refine(m: int, efc: int, storage: str = "sq8", kfs=(1, 2, 4),
                    efs=(32, 48, 64, 96, 128)) -> None:
        inner = graph(m, efc, storage)
        index = faiss.IndexRefineFlat(inner)
        refined(f"hnsw{storage}-M{m}-efc{efc}-refine", inner, index, timed_build(index), efs,
                kfs)

    def proj_hnsw(dims: int, m: int, efc: int, kfs=(2, 4, 8),
                  efs=(32, 48, 64, 96, 128)) -> None:
        start = time.perf_counter()
        sample = base[::10].astype(np.float64)
        _, vecs = np.linalg.eigh(sample.T @ sample / len(sample))  # uncentred: keeps dot products
        top = vecs[:, ::-1][:, :dims].astype(np.float32)
        transform = faiss.LinearTransform(d, dims, False)
        faiss.copy_array_to_vector(top.T.ravel(), transform.A)
        transform.is_trained = True
        inner = graph(m, efc, "flat", dims)
        index = faiss.IndexRefineFlat(faiss.IndexPreTransform(transform, inner))
        build = timed_build(index) + time.perf_counter() - start
        refined(f"proj{dims}-hnswflat-M{m}-efc{efc}-refine", inner, index, build, efs, kfs)

    def scann_(leaves: int, sample: int, reorder: int, soar: float | None = None) -> None:
        import scann

        start = time.perf_counter()
        spill = {"soar_lambda": soar, "overretrieve_factor": 2.0} if soar else {}
        searcher = scann.scann_ops_pybind.builder(base, K, "dot_product").tree(
            num_leaves=leaves, num_leaves_to_search=32, training_sample_size=sample, **spill
        ).score_ah(2, anisotropic_quantization_threshold=0.2).reorder(reorder).build()
        build = time.perf_counter() - start

        def at(n):
            return lambda: searcher.search_batched_parallel(
                queries, final_num_neighbors=K, leaves_to_search=n,
                pre_reorder_num_neighbors=reorder)[0]
        report(f"scann-L{leaves}-S{sample}-soar{soar}-d2", build,
               [(f"l{n}-r{reorder}", at(n)) for n in (8, 16, 24, 32, 48, 64, 96)])

    def ivf(nlist: int, m: int = 32, codes: str = "Flat", refine: str | None = None,
            kfs=(4,), probes=(8, 16, 24, 32, 48, 64, 96, 128)) -> None:
        key = f"IVF{nlist}_HNSW{m},{codes}" + (f",{refine}" if refine else "")
        index = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        index.train(base[:max(args.sample, 40 * nlist)])
        index.add(base)
        build = time.perf_counter() - start
        lists = faiss.extract_index_ivf(index)

        def at(p, kf):
            def search():
                lists.nprobe = p
                if refine:
                    index.k_factor = kf
                return index.search(queries, K)[1]
            return search
        report(key, build, [(f"np{p}-kf{kf}", at(p, kf)) for p in probes for kf in kfs])

    eval(args.config, {"hnsw": hnsw, "hnsw_refine": hnsw_refine, "proj_hnsw": proj_hnsw,
                       "scann_": scann_, "ivf": ivf})


if __name__ == "__main__":
    main()
