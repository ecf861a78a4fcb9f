"""Sparse entries read by sorted keys, or through a dense copy when the matrix is small."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from metricls.csr_keys import is_small, rows_of
from metricls.pipeline.features import pick
from metricls.pipeline.state import LabelStats


@pytest.mark.parametrize("width", [1000, 1 << 40])  # keys that fit int32, and keys that do not
def test_rows_of_gives_each_rows_distinct_columns_and_their_counts(width):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 7, 500)
    cols = rng.integers(0, 50, 500) * (width // 50)
    indptr, columns, counts = rows_of(rows, cols, 9, width)
    assert columns.dtype == np.int64 and indptr.dtype == np.int64
    pairs, expected = np.unique(np.stack([rows, cols], 1), axis=0, return_counts=True)
    np.testing.assert_array_equal(np.diff(indptr), np.bincount(pairs[:, 0], minlength=9))
    np.testing.assert_array_equal(columns, pairs[:, 1])
    np.testing.assert_array_equal(counts, expected)
    empty = rows_of(np.zeros(0, np.int64), np.zeros(0, np.int64), 0, width)
    assert [len(part) for part in empty] == [1, 0, 0]


def test_small_and_large_matrices_give_the_same_entries(monkeypatch):
    rng = np.random.default_rng(1)
    D = np.where(rng.random((30, 40)) < 0.2, rng.random((30, 40)), 0.0).astype(np.float32)
    ids = rng.integers(0, 40, (30, 7))
    S = sp.csr_matrix(D)
    for a, b in zip(S.indptr[:-1], S.indptr[1:]):  # unsorted within rows, as products leave them
        S.indices[a:b], S.data[a:b] = S.indices[a:b][::-1].copy(), S.data[a:b][::-1].copy()
    S.has_sorted_indices = False
    assert (S.toarray() == D).all()
    assert is_small(S)
    dense = pick(S, ids)
    np.testing.assert_array_equal(dense, np.take_along_axis(D, ids, 1))
    Y = sp.csr_matrix((rng.random((60, 40)) < 0.1).astype(np.float32))
    m, l_ = rng.integers(0, 40, 200), rng.integers(0, 40, 200)
    given_dense = LabelStats.of(Y).given_at(m, l_)
    monkeypatch.setattr("metricls.csr_keys.DENSE_CELLS", 0)
    assert not is_small(S)
    np.testing.assert_array_equal(pick(S, ids), dense)
    np.testing.assert_array_equal(LabelStats.of(Y).given_at(m, l_), given_dense)
    np.testing.assert_allclose(given_dense, LabelStats.of(Y).given.toarray()[m, l_])
