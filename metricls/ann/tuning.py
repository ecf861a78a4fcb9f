"""tune_index: the cheapest search setting of an ANN index that reaches a recall target."""

from __future__ import annotations

from typing import Any

import numpy as np

from metricls.ann.base import AnnIndex, check_positive_int, check_vectors
from metricls.ann.faiss_lib import faiss
from metricls.errors import InputError


def recall_at_k_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / |exact| (ids -1 ignored; rows without exact ids
    are skipped).

    Args:
        approx_ids: (n, k) ids returned by the approximate index.
        exact_ids: (n, k) ids returned by exact search for the same queries.
    """
    approx, exact = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx.ndim != 2 or approx.shape[0] != exact.shape[0] or exact.ndim != 2:
        raise InputError(f"approx_ids, exact_ids: expected 2-D arrays with the same number of "
                         f"rows, got shapes {approx.shape} and {exact.shape}")
    valid = exact >= 0
    found = (exact[:, :, None] == approx[:, None, :]).any(axis=2) & valid
    per_row = valid.sum(axis=1)
    rows = per_row > 0
    if not rows.any():
        return 0.0
    return float(np.mean(found[rows].sum(axis=1) / per_row[rows]))


def tune_index(index: AnnIndex, queries: np.ndarray, *, k: int = 10,
               target_recall: float = 0.99, exact: AnnIndex | None = None,
               vectors: np.ndarray | None = None, max_queries: int = 2000) -> dict[str, Any]:
    """Set the cheapest search parameters of `index` whose recall@k against exact search
    reaches `target_recall` (the most accurate tried if none does).

    Args:
        index: a built index (flat has nothing to tune and reports recall 1.0).
        queries: (n, dim) query vectors, e.g. validation embeddings.
        k: the cut-off of recall@k (capped at `index.ntotal`).
        target_recall: in (0, 1].
        exact: an exact index over the same vectors and ids (default: brute-force search
            over `vectors`, or over the vectors reconstructed from `index`).
        vectors: the vectors `index` was built from (not copied: may be memory-mapped).
        max_queries: queries used at most (an evenly spaced subset).

    Returns:
        {"params": the chosen search parameters, "recall@k": their recall, "k": k}.
    """
    queries = check_vectors(queries, "queries", index.dim, allow_empty=False)
    k = min(check_positive_int(k, "k"), max(index.ntotal, 1))
    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) \
            or not 0 < target_recall <= 1:
        raise InputError(f"target_recall: expected a number in (0, 1], got {target_recall!r}")
    grid = index.search_param_grid(k)
    if not grid:
        return {"params": {}, "recall@k": 1.0 if index.backend == "flat" else
                _recall(index, queries, k, exact, vectors), "k": k}
    step = max(1, -(-len(queries) // max_queries))
    sample = queries[::step]
    truth = _exact_ids(index, exact, vectors, sample, k)
    chosen, recall = grid[-1], 0.0
    for params in grid:
        index.set_search_params(**params)
        recall = recall_at_k_vs_exact(index.search(sample, k)[1], truth)
        if recall >= target_recall:
            chosen = params
            break
    return {"params": dict(chosen), "recall@k": recall, "k": k}


def _recall(index: AnnIndex, queries: np.ndarray, k: int, exact: AnnIndex | None,
            vectors: np.ndarray | None) -> float:
    """Recall@k of `index` as it is (an exact-by-construction index still gets measured)."""
    truth = _exact_ids(index, exact, vectors, queries, k)
    return recall_at_k_vs_exact(index.search(queries, k)[1], truth)


def _exact_ids(index: AnnIndex, exact: AnnIndex | None, vectors: np.ndarray | None,
               queries: np.ndarray, k: int) -> np.ndarray:
    """(n, k) ids of exact search: `exact`'s, else brute force over `vectors` (not copied, so a
    memory-mapped array stays on disk), else over the vectors reconstructed from `index`."""
    if exact is not None:
        if exact.dim != index.dim or exact.ntotal != index.ntotal:
            raise InputError(f"exact: expected an index of {index.ntotal} vectors of dim "
                             f"{index.dim}, got {exact.ntotal} of dim {exact.dim}")
        return exact.search(queries, k)[1]
    if vectors is None:
        vectors = index.reconstruct()
    vectors = check_vectors(vectors, "vectors", index.dim, allow_empty=False)
    if len(vectors) != index.ntotal:
        raise InputError(f"vectors: expected the {index.ntotal} vectors the index holds, got "
                         f"{len(vectors)}")
    return faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
