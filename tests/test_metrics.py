"""Ranking metrics: hand-computed values on a tiny example, edge cases, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from metricls.errors import InputError
from metricls.metrics import (
    macro_recall_at_k,
    ndcg_at_k,
    precision_at_k,
    propensities,
    psp_at_k,
    ranking_report,
    recall_at_k,
)

# Truth: 4 items, 5 columns; columns 0-3 are known labels, column 4 is an unknown label
# appended by the caller (never predicted). Row 2 has no label.
#   row 0: {0, 2}    row 1: {1}    row 2: {}    row 3: {3, 4}
Y = sp.csr_matrix(np.array([[1, 0, 1, 0, 0],
                            [0, 1, 0, 0, 0],
                            [0, 0, 0, 0, 0],
                            [0, 0, 0, 1, 1]], dtype=np.float32))
# Predictions, best first, -1 = padding:
#   row 0: [2, 1, 0]   -> hits [1, 0, 1]
#   row 1: [0, -1, -1] -> hits [0, 0, 0]
#   row 2: [1, 2, 3]   -> hits [0, 0, 0]
#   row 3: [3, 0, -1]  -> hits [1, 0, 0]
IDS = np.array([[2, 1, 0], [0, -1, -1], [1, 2, 3], [3, 0, -1]], dtype=np.int64)
# 1/p per column = [2, 4, 1, 2, 5]
PROPS = np.array([0.5, 0.25, 1.0, 0.5, 0.2])
LOG3 = np.log2(3.0)


def test_precision_hand_computed():
    # P@1 = (1 + 0 + 0 + 1) / 1 / 4 rows = 0.5 (the unlabelled row counts as a row)
    assert precision_at_k(IDS, Y, 1) == pytest.approx(0.5)
    # P@3 = (2 + 0 + 0 + 1) / 3 / 4 = 0.25
    assert precision_at_k(IDS, Y, 3) == pytest.approx(0.25)
    # ids has 3 columns: ranks 4 and 5 are misses. P@5 = 3 / 5 / 4 = 0.15
    assert precision_at_k(IDS, Y, 5) == pytest.approx(0.15)


def test_recall_hand_computed():
    # labelled rows 0, 1, 3 (n_true 2, 1, 2); R@1 = (1/2 + 0 + 1/2) / 3 = 1/3
    assert recall_at_k(IDS, Y, 1) == pytest.approx(1 / 3)
    # R@3 = (2/2 + 0 + 1/2) / 3 = 0.5; the unknown label 4 of row 3 is a miss
    assert recall_at_k(IDS, Y, 3) == pytest.approx(0.5)


def test_ndcg_hand_computed():
    # nDCG@1: row 0 hit at rank 0 -> 1/1; row 1 -> 0; row 3 -> 1/1; mean = 2/3
    assert ndcg_at_k(IDS, Y, 1) == pytest.approx(2 / 3)
    # nDCG@3: row 0: DCG = 1/log2(2) + 1/log2(4) = 1.5, IDCG (2 true) = 1 + 1/log2(3)
    #         row 1: 0;  row 3: DCG = 1, IDCG (2 true) = 1 + 1/log2(3)
    expected = (1.5 / (1 + 1 / LOG3) + 0.0 + 1.0 / (1 + 1 / LOG3)) / 3  # = 0.51096
    assert ndcg_at_k(IDS, Y, 3) == pytest.approx(expected)
    assert expected == pytest.approx(0.510956, abs=1e-6)


def test_psp_hand_computed():
    # PSP@1: gained = row 0 label 2 (1/p = 1) + row 3 label 3 (2) = 3
    #        best   = row 0 max(2, 1) + row 1 4 + row 2 0 + row 3 max(2, 5) = 11
    assert psp_at_k(IDS, Y, 1, PROPS) == pytest.approx(3 / 11)
    # PSP@3: gained = row 0 (1 + 2) + row 3 (2) = 5
    #        best   = row 0 (2 + 1) + row 1 (4) + row 3 (2 + 5) = 14
    assert psp_at_k(IDS, Y, 3, PROPS) == pytest.approx(5 / 14)


def test_macro_recall_hand_computed():
    # labels with a positive: 0 (row 0), 1 (row 1), 2 (row 0), 3 (row 3), 4 (row 3)
    # top 1: label 2 (row 0) and 3 (row 3) found -> 2 / 5
    assert macro_recall_at_k(IDS, Y, 1) == pytest.approx(0.4)
    # top 3: labels 0, 2, 3 found; 1 and the unknown 4 missed -> 3 / 5
    assert macro_recall_at_k(IDS, Y, 3) == pytest.approx(0.6)


def test_propensities_hand_computed():
    # N = 100: C = (ln 100 - 1) * 2.5^0.55 = 3.60517 * 1.65530 = 5.96750
    # N_l = 0:  p = 1 / (1 + C * 1.5^-0.55)  = 1 / (1 + 5.96750 * 0.80012) = 0.173170
    # N_l = 10: p = 1 / (1 + C * 11.5^-0.55) = 0.391017
    p = propensities(np.array([0, 10]), 100)
    assert p == pytest.approx([0.173170, 0.391017], abs=1e-6)
    assert np.all(np.diff(propensities(np.arange(50), 1000)) > 0)  # frequent = less rare


def test_ranking_report_keys_and_values():
    report = ranking_report(IDS, Y, propensities=PROPS)
    for key in ("P@1", "P@3", "P@5", "P@10", "R@1", "R@3", "R@5", "R@10", "nDCG@1", "nDCG@3",
                "nDCG@5", "nDCG@10", "PSP@1", "PSP@3", "PSP@5", "PSP@10", "macro_R@10"):
        assert isinstance(report[key], float), key
    assert report["P@3"] == pytest.approx(0.25)
    assert report["PSP@1"] == pytest.approx(3 / 11)
    # 10 > 3 columns: ranks 4-10 are misses. P@10 = 3 / 10 / 4
    assert report["P@10"] == pytest.approx(0.075)
    assert report["R@10"] == report["R@3"]
    assert set(ranking_report(IDS, Y, propensities=PROPS, ks=(2,))) == {
        "P@2", "R@2", "nDCG@2", "PSP@2", "macro_R@2"}


def test_padding_duplicates_and_empty_rows():
    y = sp.csr_matrix(np.array([[1, 0], [0, 0]], dtype=np.float32))
    assert precision_at_k(np.full((2, 3), -1), y, 3) == 0.0
    # a repeated id counts once: row 0 [0, 0] -> 1 hit of 2; row 1 has no label
    dup = np.array([[0, 0], [1, -1]])
    assert precision_at_k(dup, y, 2) == pytest.approx(1 / 2 / 2)
    assert recall_at_k(dup, y, 2) == pytest.approx(1.0)
    nothing = sp.csr_matrix((2, 2), dtype=np.float32)
    assert recall_at_k(dup, nothing, 2) == 0.0
    assert ndcg_at_k(dup, nothing, 2) == 0.0
    assert macro_recall_at_k(dup, nothing, 2) == 0.0
    assert psp_at_k(dup, nothing, 2, np.ones(2)) == 0.0
    zero_rows = np.zeros((0, 2), dtype=np.int64)
    assert precision_at_k(zero_rows, sp.csr_matrix((0, 2)), 1) == 0.0


def test_truth_values_are_binarised():
    # duplicates summed (2.0) and explicit zeros dropped: row 0 truth = {0}
    y = sp.csr_matrix((np.array([1.0, 1.0, 0.0]), np.array([0, 0, 1]), np.array([0, 3])),
                      shape=(1, 2))
    assert precision_at_k(np.array([[0, 1]]), y, 2) == pytest.approx(0.5)
    assert recall_at_k(np.array([[0, 1]]), y, 1) == pytest.approx(1.0)


def _reference(ids: np.ndarray, dense: np.ndarray, k: int, inv: np.ndarray) -> dict:
    """Plain-loop reference implementation."""
    p, r, nd, gained, best = [], [], [], 0.0, 0.0
    for row, truth in zip(ids, dense, strict=True):
        true = set(np.flatnonzero(truth))
        top = list(row[:k])
        hit = [i in true for i in top]
        p.append(sum(hit) / k)
        gained += sum(inv[i] for i, h in zip(top, hit, strict=True) if h)
        best += sum(sorted((inv[i] for i in true), reverse=True)[:k])
        if true:
            r.append(sum(hit) / len(true))
            dcg = sum(h / np.log2(j + 2) for j, h in enumerate(hit))
            nd.append(dcg / sum(1 / np.log2(j + 2) for j in range(min(k, len(true)))))
    return {"P": np.mean(p), "R": np.mean(r), "nDCG": np.mean(nd), "PSP": gained / best}


def test_matches_loop_reference_on_random_data():
    rng = np.random.default_rng(0)
    dense = (rng.random((200, 30)) < 0.1).astype(np.float32)
    ids = np.argsort(-(rng.random((200, 30)) + dense * 0.5), axis=1)[:, :10]
    inv = 1 / rng.uniform(0.1, 1.0, 30)
    for k in (1, 3, 5, 10):
        ref = _reference(ids, dense, k, inv)
        y = sp.csr_matrix(dense)
        assert precision_at_k(ids, y, k) == pytest.approx(ref["P"])
        assert recall_at_k(ids, y, k) == pytest.approx(ref["R"])
        assert ndcg_at_k(ids, y, k) == pytest.approx(ref["nDCG"])
        assert psp_at_k(ids, y, k, 1 / inv) == pytest.approx(ref["PSP"])


@pytest.mark.parametrize("call, match", [
    (lambda: precision_at_k(np.array([0, 1]), Y, 1), "ids: expected a 2-D integer"),
    (lambda: precision_at_k(IDS.astype(float), Y, 1), "ids: expected a 2-D integer"),
    (lambda: precision_at_k(IDS, Y.toarray(), 1), "Y: expected a 2-D scipy.sparse"),
    (lambda: precision_at_k(IDS[:3], Y, 1), "Y: has 4 rows but ids has 3"),
    (lambda: precision_at_k(IDS, Y, 0), "k: expected a positive int"),
    (lambda: recall_at_k(IDS, Y, 1.5), "k: expected a positive int"),
    (lambda: ndcg_at_k(IDS, Y, True), "k: expected a positive int"),
    (lambda: precision_at_k(IDS + 3, Y, 1), r"ids: expected label ids in \[0, 5\)"),
    (lambda: precision_at_k(IDS - 2, Y, 1), r"ids: expected label ids in \[0, 5\)"),
    (lambda: psp_at_k(IDS, Y, 1, PROPS[:4]), "one value per column of Y"),
    (lambda: psp_at_k(IDS, Y, 1, np.zeros(5)), "propensities: expected finite values > 0"),
    (lambda: ranking_report(IDS, Y, propensities=PROPS, ks=()), "ks: expected a non-empty"),
    (lambda: ranking_report(IDS, Y, propensities=PROPS, ks=(0,)), "ks: expected a positive"),
    (lambda: propensities(np.array([-1, 2]), 10), "counts: expected finite, non-negative"),
    (lambda: propensities(np.ones((2, 2)), 10), "counts: expected a 1-D"),
    (lambda: propensities(np.ones(2), 0), "n_items: expected a number of items >= 1"),
])
def test_bad_input_raises_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_vectorised_speed():
    import time

    rng = np.random.default_rng(1)
    y = sp.csr_matrix((np.ones(180_000), rng.integers(0, 600, 180_000),
                       np.arange(0, 180_001, 6)), shape=(30_000, 600))  # 6 labels per row
    ids = rng.integers(-1, 600, size=(30_000, 10))
    start = time.perf_counter()
    ranking_report(ids, y, propensities=propensities(np.asarray(y.sum(0)).ravel(), 30_000))
    assert time.perf_counter() - start < 1.0
