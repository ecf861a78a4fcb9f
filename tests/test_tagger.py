"""metricls/tagger.py: the public facade over one TaggerState snapshot."""

import re

import numpy as np
import pytest

from metricls import Tagger
from metricls.data.dataset import read_config_items
from metricls.errors import InputError

TEXTS = ["w0x1 w0x2 noise3", "w5x0 w5x3 w9x1", "noise1 w12x2 w3x0", "w17x1"]


@pytest.fixture(scope="module")
def tagger(tiny_tagger_dir):
    return Tagger.load(tiny_tagger_dir)


def test_tuned_threshold_keeps_the_tags_past_each_labels_threshold(tagger):
    thresholds = tagger.state.scoring.label_thresholds
    assert len(thresholds) == len(tagger.labels)  # the tiny build tunes one per label
    every = tagger.predict(TEXTS, k=len(tagger.labels))
    tuned = tagger.predict(TEXTS, k=len(tagger.labels), threshold="tuned")
    ids = {name: i for i, name in enumerate(tagger.labels)}
    assert tuned == [[(n, s) for n, s in row if s >= thresholds[ids[n]]] for row in every]
    kept = sum(map(len, tuned))
    assert 0 < kept < sum(map(len, every))  # some tags pass and some do not


def test_predict_names_what_predict_scores_returns(tagger):
    scores, ids = tagger.predict_scores(TEXTS, k=6)
    named = [[(tagger.labels[i], float(s)) for i, s in zip(row_ids, row) if i >= 0]
             for row_ids, row in zip(ids, scores)]
    assert tagger.predict(TEXTS, k=6) == named


def test_predicting_changes_nothing_on_the_tagger(tagger):
    state, changes, origin = tagger.state, list(tagger._changes), tagger._origin_sha
    prototypes = tagger.prototypes.copy()
    tagger.predict(TEXTS, k=3, threshold="tuned")
    tagger.predict_scores(TEXTS, k=3)
    tagger.embed(TEXTS)
    assert tagger.state is state and tagger._changes == changes == []
    assert tagger._origin_sha == origin
    np.testing.assert_array_equal(tagger.prototypes, prototypes)


def test_k_past_the_label_count_gives_each_label_at_most_once(tagger):
    L = len(tagger.labels)
    rows = tagger.predict(TEXTS, k=L + 7)
    assert all(len(row) <= L and len({n for n, _ in row}) == len(row) for row in rows)
    scores, ids = tagger.predict_scores(TEXTS, k=L + 7)
    assert ids.shape == scores.shape == (len(TEXTS), L + 7)
    assert (ids[:, L:] == -1).all() and np.isneginf(scores[:, L:]).all()  # padding past L


def test_predict_scores_caps_k(tagger):
    cap = max(len(tagger.labels), 1000)
    assert tagger.predict_scores([], k=cap)[0].shape == (0, cap)
    with pytest.raises(InputError, match=re.escape(f"k: expected at most {cap}, got {cap + 1}")):
        tagger.predict_scores(TEXTS, k=cap + 1)


def test_empty_inputs_give_empty_outputs_of_the_right_shape(tagger):
    emb = tagger.embed([])
    assert emb.shape == (0, tagger.model.out_dim) and emb.dtype == np.float32
    scores, ids = tagger.predict_scores([], k=4)
    assert scores.shape == ids.shape == (0, 4) and ids.dtype == np.int64
    assert tagger.predict([], k=4, threshold="tuned") == []


def test_items_are_tagged_like_their_texts(tagger):
    items = read_config_items(tagger.config.data).subset("test")
    items = items.subset(np.arange(5))
    np.testing.assert_array_equal(tagger.embed(items), tagger.embed(items.texts))
    assert tagger.predict(items, k=3) == tagger.predict(items.texts, k=3)


def test_a_text_tagger_refuses_feature_rows(tagger):
    with pytest.raises(InputError, match=re.escape("inputs: this tagger reads texts")):
        tagger.predict(np.ones((2, 8), dtype=np.float32))


def test_repr_says_what_the_tagger_is(tagger):
    s = tagger.state
    assert repr(tagger) == (f"Tagger(labels={len(tagger.labels)}, dim={tagger.model.out_dim}, "
                            f"backend='flat', items={s.item_index.ntotal})")
    assert tagger.vocab.names == tagger.labels and len(tagger.prototypes) == len(tagger.labels)
