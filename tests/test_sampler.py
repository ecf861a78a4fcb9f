import numpy as np
import pytest
import scipy.sparse as sp

from metricls.data.sampler import LabelBatchSampler
from metricls.errors import InputError


def _labels(n=500, L=40, seed=0):
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, L + 1) ** 1.2
    rows, cols = [], []
    for i in range(n):
        for label in set(rng.choice(L, size=rng.integers(1, 3), p=freq / freq.sum()).tolist()):
            rows.append(i)
            cols.append(label)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, L))


def test_batches_hold_positives_and_reach_tail_labels():
    Y = _labels()
    sampler = LabelBatchSampler(Y, batch_size=64, labels_per_batch=16, power=0.0, seed=1)
    seen = np.zeros(Y.shape[1], dtype=bool)
    for batch in sampler:
        assert len(batch) == len(set(batch.tolist())) <= 64
        counts = np.asarray(Y[batch].sum(axis=0)).ravel()
        assert (counts >= 2).sum() >= 1  # some label has a positive pair in the batch
        seen |= counts > 0
    assert len(sampler) == -(-Y.shape[0] // 64)
    present = np.asarray(Y.sum(axis=0)).ravel() > 0
    assert seen[present].mean() > 0.9  # uniform label draws reach the tail


def test_epochs_differ_and_seed_repeats():
    Y = _labels()
    a = LabelBatchSampler(Y, 64, 16, seed=3)
    b = LabelBatchSampler(Y, 64, 16, seed=3)
    first = [x.tolist() for x in a]
    assert first == [x.tolist() for x in b]
    a.set_epoch(1)
    assert first != [x.tolist() for x in a]


def test_rejects_unusable_input():
    with pytest.raises(InputError, match="no training item has a label"):
        LabelBatchSampler(sp.csr_matrix((10, 3), dtype=np.float32), 4, 2)
    with pytest.raises(InputError, match="batch_size"):
        LabelBatchSampler(_labels(), 1, 2)
