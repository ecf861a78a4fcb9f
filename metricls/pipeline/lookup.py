"""Entries of a sparse matrix at many (row, column) places, by binary search.

The candidate features read a few entries per candidate from sparse (n, L) matrices (votes,
TF-IDF cosines, label co-occurrence); scipy's fancy indexing checks and converts far more than
this needs, and took a third of a batch's feature time.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def keyed(S: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """`S` as CSR with sorted column indices, and the sorted key row * columns + column of
    each stored entry (what `entries` searches)."""
    S = sp.csr_matrix(S)
    if not S.has_sorted_indices:
        S = S.sorted_indices()
    rows = np.repeat(np.arange(S.shape[0], dtype=np.int64), np.diff(S.indptr))
    return S, rows * S.shape[1] + S.indices


def entries(S: sp.csr_matrix, keys: np.ndarray, rows: np.ndarray,
            cols: np.ndarray) -> np.ndarray:
    """float32 S[rows[t], cols[t]] (0 where nothing is stored) by a binary search of the
    `keyed` keys: scipy's fancy indexing checks and converts far more than this needs."""
    if len(keys) == 0:
        return np.zeros(len(rows), np.float32)
    wanted = rows.astype(np.int64) * S.shape[1] + cols
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, S.data[at], 0.0).astype(np.float32)
