import numpy as np
import pytest
import scipy.sparse as sp

from metricls.errors import InputError
from metricls.prototypes import mean_prototypes, normalize_rows


def test_mean_prototypes_match_dense_computation_in_chunks():
    rng = np.random.default_rng(0)
    emb = normalize_rows(rng.normal(size=(50, 6)))
    dense = (rng.random((50, 7)) < 0.2).astype(np.float32)
    dense[:, 6] = 0  # a label with no item
    Y = sp.csr_matrix(dense)
    protos, counts = mean_prototypes(emb, Y, chunk=7)
    expected = normalize_rows(dense.T @ emb)
    np.testing.assert_allclose(protos, expected, atol=1e-5)
    assert counts.tolist() == dense.sum(axis=0).astype(int).tolist()
    assert np.allclose(protos[6], 0.0)
    np.testing.assert_allclose(np.linalg.norm(protos[:6], axis=1)[counts[:6] > 0], 1.0, atol=1e-5)


def test_mean_prototypes_rejects_mismatched_rows():
    with pytest.raises(InputError, match="50 rows but labels have 3"):
        mean_prototypes(np.zeros((50, 2), np.float32), sp.csr_matrix((3, 2)))
