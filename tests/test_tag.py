"""metricls/pipeline/tag.py: selection, naming and the scoring entry point."""

import dataclasses
import re

import numpy as np
import pytest

from metricls import Tagger
from metricls.config import IndexConfig
from metricls.errors import InputError
from metricls.pipeline.scoring import TAIL_DEPTH, TAIL_FROM
from metricls.pipeline.tag import named, neighbours, reads_texts, score, selection

TEXTS = ["w0x1 w0x2 noise3", "w5x0 w5x3 w9x1", "noise1 w12x2 w3x0"]


@pytest.fixture(scope="module")
def tagger(tiny_tagger_dir):
    return Tagger.load(tiny_tagger_dir)


@pytest.fixture(scope="module")
def blend(tagger):
    """The tiny tagger's state without its reranker: scores are the blend."""
    return tagger.state.replace(reranker=None, tfidf=None)


def test_selection_caps_k_and_reads_the_threshold(tagger):
    state, L = tagger.state, len(tagger.labels)
    assert selection(3, None, state) == (3, None)
    assert selection(L + 5, None, state) == (L, None)
    assert selection(2, "tuned", state) == (2, None)
    assert selection(2, 0.25, state) == (2, 0.25)
    assert selection(2, 1, state) == (2, 1.0)


@pytest.mark.parametrize(("k", "threshold", "message"), [
    (2, "0.5", "threshold: expected None, a number or 'tuned'"),
    (2, "Tuned", "threshold: expected None, a number or 'tuned'"),
    (2, float("nan"), "threshold: expected None, a number or 'tuned'; must be finite"),
    (2, True, "threshold: expected None, a number or 'tuned'"),
    (0, None, "k"),
])
def test_selection_refuses_bad_arguments_in_one_line(tagger, k, threshold, message):
    with pytest.raises(InputError, match=re.escape(message)) as err:
        selection(k, threshold, tagger.state)
    assert "\n" not in str(err.value)


def test_named_drops_padding_and_applies_the_cut(tagger):
    state, names = tagger.state, tagger.labels
    scores = np.array([[0.9, 0.5, -np.inf], [0.4, -np.inf, -np.inf]], np.float32)
    ids = np.array([[2, 0, -1], [7, -1, -1]])
    assert named(state, scores, ids, None, None) == [
        [(names[2], pytest.approx(0.9)), (names[0], 0.5)], [(names[7], pytest.approx(0.4))]]
    assert named(state, scores, ids, 0.45, 0.45) == [[(names[2], pytest.approx(0.9)),
                                                      (names[0], 0.5)], []]


def test_named_tuned_uses_each_labels_threshold(tagger):
    L = len(tagger.labels)
    thresholds = [0.0] * L
    thresholds[2] = 0.95  # label 2 needs more than it scores
    state = tagger.state.replace(scoring=dataclasses.replace(tagger.state.scoring,
                                                             label_thresholds=thresholds))
    scores = np.array([[0.9, 0.5, -np.inf]], np.float32)
    ids = np.array([[2, 0, -1]])
    assert named(state, scores, ids, "tuned", None) == [[(tagger.labels[0], 0.5)]]


def test_reads_texts_only_with_both_tfidf_and_a_reranker(tagger):
    state = tagger.state
    assert state.tfidf is not None and state.reranker is not None and reads_texts(state)
    assert not reads_texts(state.replace(tfidf=None))
    assert not reads_texts(state.replace(reranker=None))


def test_a_reranker_that_reads_texts_needs_them(tagger):
    emb = tagger.embed(TEXTS)
    with pytest.raises(InputError, match=re.escape("texts: this tagger's reranker reads the")):
        neighbours(tagger.state, emb, 3)
    with pytest.raises(InputError, match=re.escape("pass texts=")):
        score(tagger.state, emb, 3)


@pytest.mark.parametrize("which", ["reranker", "blend"])
def test_no_rows_give_empty_results(tagger, blend, which):
    state = tagger.state if which == "reranker" else blend
    scores, ids = score(state, np.zeros((0, tagger.model.out_dim), np.float32), 4, [])
    assert scores.shape == ids.shape == (0, 4)
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_blend_one_scores_are_the_prototype_cosines(tagger, blend):
    state = blend.replace(scoring=dataclasses.replace(blend.scoring, blend=1.0, label_bias=[]))
    emb = tagger.embed(TEXTS)
    scores, ids = score(state, emb, 5)
    cosines = emb @ state.prototypes.T
    expected_ids = np.argsort(-cosines, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, (1 + np.take_along_axis(cosines, ids, 1)) / 2, atol=1e-5)


def test_blend_scores_are_sorted_and_bounded(tagger, blend):
    plain = blend.replace(scoring=dataclasses.replace(blend.scoring, tail_weight=0.0))
    scores, ids = score(plain, tagger.embed(TEXTS), len(tagger.labels))
    kept = ids >= 0
    assert kept[:, 0].all()
    assert ((scores[kept] >= 0) & (scores[kept] <= 1 + 1e-6)).all()
    for row, found in zip(scores, kept):
        assert found[:found.sum()].all()  # padding only at the end
        assert (np.diff(row[found]) <= 0).all()


def test_the_tail_after_five_is_ordered_by_probability_over_propensity(tagger, blend):
    state = tagger.state
    weight = state.scoring.tail_weight
    assert weight == IndexConfig().tail_weight > 0  # the default
    plain = state.replace(scoring=dataclasses.replace(state.scoring, tail_weight=0.0))
    emb, L = tagger.embed(TEXTS), len(tagger.labels)
    texts = TEXTS
    s0, i0 = score(plain, emb, L, texts)
    s1, i1 = score(state, emb, 10, texts)
    np.testing.assert_array_equal(i1[:, :TAIL_FROM], i0[:, :TAIL_FROM])  # the first five stay
    np.testing.assert_allclose(s1[:, :TAIL_FROM], s0[:, :TAIL_FROM], atol=1e-6)
    props = state.vocab.propensities()
    for row_s, row_i, all_s, all_i in zip(s1, i1, s0, i0):
        key = row_s[TAIL_FROM:] / props[row_i[TAIL_FROM:]] ** weight
        assert (np.diff(key) <= 1e-6).all()  # then by score / propensity^weight
        pool = dict(zip(all_i.tolist(), all_s.tolist()))
        assert all(pool[i] == pytest.approx(s, abs=1e-6) for i, s in zip(row_i, row_s))
        rest = [i for i in all_i[TAIL_FROM:TAIL_DEPTH].tolist() if i not in row_i]
        # the best of them
        assert all(pool[i] / props[i] ** weight <= key.min() + 1e-6 for i in rest)
    rare = np.argsort(props)[:3]  # the rarest labels rise in the tail
    assert np.isin(i1[:, TAIL_FROM:], rare).sum() >= np.isin(i0[:, TAIL_FROM:10], rare).sum()
    # the blend's scores are no probabilities: no tail ordering, whatever the weight
    assert blend.scoring.tail_weight == weight
    flat = blend.replace(scoring=dataclasses.replace(blend.scoring, tail_weight=0.0))
    for got, want in zip(score(blend, emb, 10), score(flat, emb, 10)):
        np.testing.assert_array_equal(got, want)


def test_a_shorter_top_k_is_the_start_of_a_longer_one(tagger):
    """With the tail on, more labels than TAIL_DEPTH (zero-shot ones added) and labels
    added after training: predict(k) is the start of predict(k') for k < k' <= TAIL_DEPTH."""
    from conftest import replaced

    tagger = replaced(tagger)  # a private copy to add labels to
    tagger.add_label("new::echo", examples=TEXTS[:2])
    for j in range(TAIL_DEPTH + 1 - len(tagger.labels)):
        tagger.add_label(f"zero::w{j}", description=f"w{j % 20}x{j % 4} noise{j % 30}")
    assert len(tagger.labels) > TAIL_DEPTH
    lists = {k: tagger.predict(TEXTS, k=k) for k in (1, 5, 6, 10, 20, TAIL_DEPTH - 1,
                                                     TAIL_DEPTH)}
    for short, long in zip(lists, list(lists)[1:]):
        for a, b in zip(lists[short], lists[long]):
            assert [n for n, _ in b[:short]] == [n for n, _ in a]
            assert [s for _, s in b[:short]] == pytest.approx([s for _, s in a])
