"""Sparse rows as sorted (row, column) keys: row * columns + column, one int64 per entry.

Sorting such keys groups entries by row and orders them by column within it, so de-duplicating
per row, counting, and finding one entry are a sort, a mask and a binary search over the whole
batch at once: the n-gram bags and TF-IDF vectors are built this way (`rows_of`), and the
candidate features read their entries this way (`keyed`, `entries`), where scipy's fancy
indexing checks and converts far more than this needs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# a matrix of at most this many cells (16 MB of float32) is read through a dense copy: for a
# few thousand labels, making it costs less than the binary searches of `entries`
DENSE_CELLS = 1 << 22


def is_small(S: sp.spmatrix) -> bool:
    """Whether `S` is read dense (at most `DENSE_CELLS` cells)."""
    return S.shape[0] * S.shape[1] <= DENSE_CELLS


def rows_of(rows: np.ndarray, cols: np.ndarray, n_rows: int,
            width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (row, column) pairs of `n_rows` rows as CSR: indptr (n_rows + 1,), the
    columns sorted within each row, and how often each pair occurred; columns in [0, width).

    `np.unique` with counts gives the same, about five times slower in numpy 2."""
    keys = np.asarray(rows, np.int64) * width + cols
    if max(n_rows * width, width) <= np.iinfo(np.int32).max:
        keys = keys.astype(np.int32)  # sorts in half the time of int64
    keys = np.sort(keys)
    first = np.flatnonzero(np.diff(keys, prepend=-1))  # keys are >= 0
    counts, keys = np.diff(first, append=len(keys)), keys[first]
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(keys // width, minlength=n_rows), out=indptr[1:])
    return indptr, (keys % width).astype(np.int64), counts


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
    `keyed` keys."""
    if len(keys) == 0:
        return np.zeros(len(rows), np.float32)
    wanted = rows.astype(np.int64) * S.shape[1] + cols
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, S.data[at], 0.0).astype(np.float32)
