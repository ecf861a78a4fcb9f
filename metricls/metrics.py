"""Ranking metrics of predicted label ids against a sparse truth matrix (numpy/scipy only).

Conventions shared by every function:

* ``ids`` is an (n, k') integer array of label ids, best first; ``-1`` is padding and never a
  hit; a repeated id in a row counts once (its later copies are misses). Ranks beyond k' are
  misses, so ``ids`` may be narrower than the ``k`` asked for.
* ``Y`` is a scipy.sparse (n, L) matrix whose nonzeros mark the true labels. It may have more
  columns than the model knows (unknown labels appended as extra columns): they are never
  predicted and count as misses.
* A mean over an empty set (no rows, no labelled rows, no labels with a positive) is 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from metricls.errors import InputError
from metricls.validation import check_k

__all__ = [
    "label_recall_at_k",
    "macro_recall_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "propensities",
    "psp_at_k",
    "ranking_report",
    "recall_at_k",
]


class _Ranked(NamedTuple):
    """Validated inputs: ids padded to `width` columns, their hits and the binary truth."""

    ids: np.ndarray  # (n, width) int64, -1 = padding
    hits: np.ndarray  # (n, width) bool
    truth: sp.csr_matrix  # (n, L), data all 1, no duplicates or explicit zeros
    n_true: np.ndarray  # (n,) true labels per row


def precision_at_k(ids: np.ndarray, Y: sp.spmatrix, k: int) -> float:
    """Mean over all rows of (hits in the top k) / k."""
    k = check_k(k)
    return _precision(_rank(ids, Y, k), k)


def recall_at_k(ids: np.ndarray, Y: sp.spmatrix, k: int) -> float:
    """Mean over rows with at least one true label of (hits in the top k) / (true labels)."""
    k = check_k(k)
    return _recall(_rank(ids, Y, k), k)


def ndcg_at_k(ids: np.ndarray, Y: sp.spmatrix, k: int) -> float:
    """Mean over labelled rows of DCG@k / IDCG@k, with gains 1/log2(rank + 2) (rank from 0).

    IDCG is the DCG of a perfect ranking of min(k, n_true) hits.
    """
    k = check_k(k)
    return _ndcg(_rank(ids, Y, k), k)


def psp_at_k(ids: np.ndarray, Y: sp.spmatrix, k: int, propensities: np.ndarray) -> float:
    """Propensity-scored precision@k, normalised as pyxclib does.

    Sum over rows of the 1/p_l of the top-k hits, divided by the sum over rows of the best
    achievable: the k largest 1/p_l among each row's true labels.

    Args:
        ids: (n, k') predicted label ids, best first.
        Y: (n, L) sparse truth.
        k: the cut-off.
        propensities: (L,) propensity of every column of `Y` (see `propensities`).
    """
    k = check_k(k)
    ranked = _rank(ids, Y, k)
    return _psp(ranked, k, _check_propensities(propensities, ranked.truth.shape[1]))


def macro_recall_at_k(ids: np.ndarray, Y: sp.spmatrix, k: int) -> float:
    """Mean over labels with at least one positive of the share of its items ranking it top k."""
    k = check_k(k)
    return _macro_recall(_rank(ids, Y, k), k)


def label_recall_at_k(ids: np.ndarray, Y: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label (column of `Y`): items carrying it, and of those the items ranking it top k.

    Returns:
        (support, found), each (L,) int64; ``found / support`` is the label's recall@k and
        `macro_recall_at_k` is its mean over labels with ``support > 0``.
    """
    k = check_k(k)
    return _label_hits(_rank(ids, Y, k), k)


def propensities(counts: np.ndarray, n_items: int, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """Label propensities of Jain et al. (2016): p_l = 1 / (1 + C exp(-a log(N_l + b))).

    Args:
        counts: (L,) number of training items carrying each label (N_l; 0 is allowed).
        n_items: number of training items N; C = (log N - 1) (b + 1)^a.
        a: the `A` of the paper (0.55 for most data sets).
        b: the `B` of the paper (1.5 for most data sets).

    Returns:
        (L,) float64 propensities; rare labels get small values (large 1/p).
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.dtype.kind not in "fiu":
        raise InputError(f"counts: expected a 1-D numeric array of label counts, got "
                         f"shape {counts.shape} dtype {counts.dtype}")
    counts = counts.astype(np.float64)
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise InputError("counts: expected finite, non-negative label counts")
    if isinstance(n_items, bool) or not isinstance(n_items, (int, float, np.number)) \
            or not n_items >= 1:
        raise InputError(f"n_items: expected a number of items >= 1, got {n_items!r}")
    c = (np.log(float(n_items)) - 1.0) * (b + 1.0) ** a
    return 1.0 / (1.0 + c * np.exp(-a * np.log(counts + b)))


def ranking_report(ids: np.ndarray, Y: sp.spmatrix, *, propensities: np.ndarray,
                   ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """Every metric at every k of `ks`, computing the hits once.

    Returns:
        Keys ``P@k``, ``R@k``, ``nDCG@k``, ``PSP@k`` and ``macro_R@k`` for each k in `ks`
        (with the default `ks`: "P@1", "P@3", "P@5", "R@5", "R@10", "nDCG@5", "PSP@5",
        "macro_R@10", ...), as Python floats.
    """
    if isinstance(ks, (int, np.integer)) or len(ks) == 0:
        raise InputError(f"ks: expected a non-empty sequence of positive ints, got {ks!r}")
    ks = sorted({check_k(k, "ks") for k in ks})
    ranked = _rank(ids, Y, max(ks))
    inverse = _check_propensities(propensities, ranked.truth.shape[1])
    metrics = {"P": _precision, "R": _recall, "nDCG": _ndcg, "macro_R": _macro_recall}
    report = {f"{name}@{k}": fn(ranked, k) for name, fn in metrics.items() for k in ks}
    report.update({f"PSP@{k}": _psp(ranked, k, inverse) for k in ks})
    return report


# ---- the metrics on validated, ranked inputs --------------------------------------------------
def _precision(r: _Ranked, k: int) -> float:
    if len(r.hits) == 0:
        return 0.0
    return float(r.hits[:, :k].sum(axis=1).mean() / k)


def _recall(r: _Ranked, k: int) -> float:
    labelled = r.n_true > 0
    if not labelled.any():
        return 0.0
    found = r.hits[labelled, :k].sum(axis=1)
    return float(np.mean(found / r.n_true[labelled]))


def _ndcg(r: _Ranked, k: int) -> float:
    labelled = r.n_true > 0
    if not labelled.any():
        return 0.0
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = r.hits[labelled, :k] @ discounts
    ideal = np.cumsum(discounts)[np.minimum(r.n_true[labelled], k) - 1]
    return float(np.mean(dcg / ideal))


def _psp(r: _Ranked, k: int, inverse: np.ndarray) -> float:
    """`inverse` is 1/p for every column of the truth."""
    top = r.ids[:, :k]
    gained = np.where(r.hits[:, :k], inverse[np.maximum(top, 0)], 0.0).sum()
    best = _sum_of_top_k_per_row(r.truth, inverse, k)
    return float(gained / best) if best > 0 else 0.0


def _label_hits(r: _Ranked, k: int) -> tuple[np.ndarray, np.ndarray]:
    n_labels = r.truth.shape[1]
    support = np.bincount(r.truth.indices, minlength=n_labels)
    found = np.bincount(r.ids[:, :k][r.hits[:, :k]], minlength=n_labels)
    return support.astype(np.int64), found.astype(np.int64)


def _macro_recall(r: _Ranked, k: int) -> float:
    support, found = _label_hits(r, k)
    positive = support > 0
    if not positive.any():
        return 0.0
    return float(np.mean(found[positive] / support[positive]))


def _sum_of_top_k_per_row(truth: sp.csr_matrix, weights: np.ndarray, k: int) -> float:
    """Sum over rows of the k largest `weights` among each row's nonzero columns."""
    values = weights[truth.indices]
    rows = np.repeat(np.arange(truth.shape[0]), np.diff(truth.indptr))
    order = np.lexsort((-values, rows))  # by row, then by weight descending
    rank_in_row = np.arange(len(values)) - truth.indptr[rows]  # rows is already sorted
    return float(values[order][rank_in_row < k].sum())


# ---- validation and hit computation -----------------------------------------------------------
def _rank(ids: np.ndarray, Y: sp.spmatrix, width: int) -> _Ranked:
    """Validate `ids` and `Y`, pad or cut `ids` to `width` columns and look up the hits."""
    ids = _check_ids(ids)
    truth = _check_truth(Y, ids.shape[0])
    n_labels = truth.shape[1]
    if ids.size and (ids.min() < -1 or ids.max() >= n_labels):
        raise InputError(f"ids: expected label ids in [0, {n_labels}) or -1 for padding "
                         f"(Y has {n_labels} columns), found values in "
                         f"[{ids.min()}, {ids.max()}]")
    padded = np.full((ids.shape[0], width), -1, dtype=np.int64)
    cols = min(width, ids.shape[1])
    padded[:, :cols] = ids[:, :cols]
    candidate = (padded >= 0) & ~_repeated_in_row(padded)
    rows = np.broadcast_to(np.arange(len(padded))[:, None], padded.shape)
    hits = np.zeros(padded.shape, dtype=bool)
    if candidate.any():
        hits[candidate] = np.asarray(truth[rows[candidate], padded[candidate]]).ravel() > 0
    return _Ranked(padded, hits, truth, np.diff(truth.indptr))


def _repeated_in_row(ids: np.ndarray) -> np.ndarray:
    """True where an id already appeared earlier in its row."""
    order = np.argsort(ids, axis=1, kind="stable")
    ordered = np.take_along_axis(ids, order, axis=1)
    repeated_sorted = np.zeros(ids.shape, dtype=bool)
    repeated_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeated = np.zeros(ids.shape, dtype=bool)
    np.put_along_axis(repeated, order, repeated_sorted, axis=1)
    return repeated


def _check_ids(ids: np.ndarray) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        raise InputError(f"ids: expected a 2-D integer array (n, k) of label ids, got "
                         f"shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_truth(Y: sp.spmatrix, n_rows: int) -> sp.csr_matrix:
    """A binary CSR copy of `Y` (duplicates summed, explicit zeros dropped)."""
    if not sp.issparse(Y) or Y.ndim != 2:
        raise InputError(f"Y: expected a 2-D scipy.sparse matrix (n, L) of true labels, got "
                         f"{type(Y).__name__}")
    if Y.shape[0] != n_rows:
        raise InputError(f"Y: has {Y.shape[0]} rows but ids has {n_rows}; expected one row "
                         "of truth per row of predictions")
    truth = sp.csr_matrix(Y, dtype=np.float32, copy=True)
    truth.sum_duplicates()
    truth.eliminate_zeros()
    truth.data[:] = 1.0
    return truth


def _check_propensities(props: np.ndarray, n_labels: int) -> np.ndarray:
    """Validate propensities for all `n_labels` truth columns; return 1/p."""
    arr = np.asarray(props)
    if arr.shape != (n_labels,) or arr.dtype.kind not in "fiu":
        raise InputError(f"propensities: expected a 1-D numeric array with one value per "
                         f"column of Y ({n_labels}, unknown extra labels included), got "
                         f"shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise InputError("propensities: expected finite values > 0")
    return 1.0 / arr
