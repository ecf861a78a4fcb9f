import numpy as np
import pytest
import scipy.sparse as sp

from metricls.pipeline.scoring import (
    Scoring,
    apply_thresholds,
    blend_scores,
    prototype_matrix,
    top_k,
    tune_global_threshold,
    tune_label_thresholds,
    vote_matrices,
    vote_matrix,
    vote_weights,
)


def test_vote_weights_neighbours_by_similarity():
    item_labels = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32))
    nn_scores = np.array([[0.9, 0.9, -1.0]], dtype=np.float32)
    nn_ids = np.array([[0, 1, -1]])
    V = vote_matrix(nn_scores, nn_ids, item_labels, temperature=0.1).toarray()
    # two equally similar neighbours: label 0 in both (1.0), label 1 in one (0.5), padding ignored
    np.testing.assert_allclose(V, [[1.0, 0.5, 0.0]], atol=1e-6)


def _vote_by_coo(nn_scores, nn_ids, item_labels, temperature):
    """The vote as first written: the weights through a COO matrix, whose conversion sorts
    each row's neighbours by id and sums repeated ids, then one product."""
    n, k = nn_ids.shape
    weights, ids = vote_weights(nn_scores, nn_ids, temperature)
    W = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), ids.ravel())),
                      shape=(n, item_labels.shape[0]))
    return (W @ item_labels).toarray()


def test_votes_are_the_same_floats_alone_stacked_and_as_first_written():
    rng = np.random.default_rng(3)
    item_labels = sp.random(400, 60, density=0.05, format="csr", dtype=np.float32,
                            random_state=4)
    item_labels.data[:] = 1.0
    n = 50
    nn_ids = np.argsort(rng.random((n, 400)), axis=1)[:, :30]  # neighbours in search order
    nn_ids[:5, 20:] = -1  # padding, which joins item 0 in the sparse weights
    nn_ids[5, :3] = 0  # item 0 itself among them
    nn_scores = np.sort(rng.random((n, 30)).astype(np.float32), axis=1)[:, ::-1].copy()
    narrow = (nn_scores[:, :10], nn_ids[:, :10], 0.02)
    wide = (nn_scores, nn_ids, 1.0)
    both = vote_matrices([narrow, wide], item_labels).toarray()
    for part, (scores, ids, t) in enumerate((narrow, wide)):
        expected = _vote_by_coo(scores, ids, item_labels, t)
        # bitwise: a vote's float is what the reranker's trees were fitted on
        assert np.array_equal(vote_matrix(scores, ids, item_labels, t).toarray(), expected)
        assert np.array_equal(both[part * n:(part + 1) * n], expected)


def test_blend_and_top_k_order_and_padding():
    P = prototype_matrix(np.array([[1.0, 0.0]]), np.array([[2, 0]]), n_labels=4)
    np.testing.assert_allclose(P.toarray(), [[0.5, 0.0, 1.0, 0.0]])
    V = sp.csr_matrix(np.array([[0.0, 1.0, 0.0, 0.0]], dtype=np.float32))
    S = blend_scores(P, V, 0.25)  # 0.25 * P + 0.75 * V
    scores, ids = top_k(S, 4)
    assert ids.tolist() == [[1, 2, 0, -1]]
    np.testing.assert_allclose(scores[0, :3], [0.75, 0.25, 0.125])
    assert scores[0, 3] == -np.inf


def test_thresholds_tuned_for_f1():
    # three items, true labels {0}, {1}, {0, 1}; scores make label 0 separable at 0.6
    Y = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32))
    ids = np.array([[0, 1], [1, 0], [0, 1]])
    scores = np.array([[0.9, 0.3], [0.8, 0.5], [0.7, 0.6]], dtype=np.float32)
    t = tune_global_threshold(scores, ids, Y)
    assert t == pytest.approx(0.6)
    per_label = tune_label_thresholds(scores, ids, Y, fallback=0.5, min_support=1)
    assert per_label[0] == pytest.approx(0.7) and per_label[1] == pytest.approx(0.6)
    keep = apply_thresholds(scores, ids, Scoring(label_thresholds=per_label), None)
    assert keep.tolist() == [[True, False], [True, False], [True, True]]
    assert apply_thresholds(scores, ids, Scoring(), 0.75).tolist() == [
        [True, False], [True, False], [False, False]]


def test_per_label_arrays_are_made_once_per_scoring():
    import dataclasses

    s = Scoring(label_thresholds=[0.5, 0.7], label_bias=[0.1, -0.1])
    assert s.threshold_array is s.threshold_array and s.bias_array is s.bias_array
    assert s.threshold_array.tolist() == pytest.approx([0.5, 0.7])
    changed = dataclasses.replace(s, label_thresholds=[0.9, 0.1, 0.3])
    assert changed.threshold_array.tolist() == pytest.approx([0.9, 0.1, 0.3])
    assert "threshold_array" not in changed.to_dict() and changed == Scoring.from_dict(
        changed.to_dict())
