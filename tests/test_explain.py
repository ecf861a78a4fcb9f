"""Tagger.explain: the evidence behind each tag is real (and scores are predict's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import replaced
from typer.testing import CliRunner

from metricls import Tagger
from metricls.cli import app
from metricls.data.dataset import read_config_items
from metricls.errors import InputError
from metricls.pipeline.explain import NEAREST


@pytest.fixture
def tagger(tiny_tagger_copy):
    return Tagger.load(tiny_tagger_copy)


def _texts(tagger, n=12):
    return read_config_items(tagger.config.data).subset("test").texts[:n]


def _exact_nearest(tagger, texts):
    """Each text's items by exact cosine, best first (the index's vectors, row ids)."""
    sims = tagger.embed(texts) @ tagger.state.item_index.reconstruct().T
    return sims, np.argsort(-sims, axis=1, kind="stable")


def _check_evidence(tagger, texts, found):
    state = tagger.state
    row_of = {item: row for row, item in enumerate(state.item_ids)}
    sims, order = _exact_nearest(tagger, texts)
    for i, tags in enumerate(found):
        nearest = set(order[i, :NEAREST].tolist())
        for tag in tags:
            label = state.vocab.index(tag["label"])
            assert tag["neighbours"], tag["label"]  # the tiny data's labels have close items
            for cited in tag["neighbours"]:
                row = row_of[cited["id"]]
                assert state.item_labels[row, label] == 1  # it carries the label
                assert row in nearest  # and is among the nearest items
                assert cited["similarity"] == pytest.approx(sims[i, row], abs=1e-4)
            similarities = [c["similarity"] for c in tag["neighbours"]]
            assert similarities == sorted(similarities, reverse=True)
            assert tag["similarity"] == pytest.approx(
                float(tagger.embed([texts[i]])[0] @ tagger.prototypes[label]), abs=1e-4)
            words = set(texts[i].lower().split())
            assert set(tag["terms"]) <= words  # words of the text ...
            centroid = state.tfidf.centroids[label]
            terms = {state.tfidf.terms[t] for t in centroid.indices}
            assert set(tag["terms"]) <= terms  # ... and of the label's TF-IDF prototype


def test_explain_gives_predicts_tags_with_real_evidence(tagger):
    texts = _texts(tagger)
    found = tagger.explain(texts, k=4)
    predicted = tagger.predict(texts, k=4)
    assert [[(t["label"], pytest.approx(t["score"])) for t in tags] for tags in found] == \
        [[(name, pytest.approx(s)) for name, s in tags] for tags in predicted]
    _check_evidence(tagger, texts, found)
    assert set(found[0][0]["features"]) >= {"cosine", "vote", "tfidf_cosine"}  # the reranker's
    assert any(tag["terms"] for tags in found for tag in tags)


def test_explain_without_a_reranker_reports_the_blend(tagger):
    tagger = replaced(tagger, reranker=None)
    texts = _texts(tagger, 6)
    found = tagger.explain(texts, k=3, neighbours=2)
    assert all("features" not in tag and len(tag["neighbours"]) <= 2
               for tags in found for tag in tags)
    _check_evidence(tagger, texts, found)
    s = tagger.state.scoring
    for tags in found:
        for tag in tags:  # the blend's score is made of what explain reports
            assert tag["score"] == pytest.approx(
                s.blend * (1 + tag["similarity"]) / 2 + (1 - s.blend) * tag["vote"], abs=1e-4)


def test_explain_cites_an_added_labels_examples_by_their_ids(tagger):
    texts = _texts(tagger, 3)
    tagger.add_label("new::echo", examples=texts)
    found = tagger.explain(texts, k=len(tagger.labels))
    for tags in found:
        tag = next(t for t in tags if t["label"] == "new::echo")
        assert tag["neighbours"][0]["id"].startswith("new::echo#example-")
        assert tag["neighbours"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)


def test_explain_refuses_bad_arguments(tagger):
    with pytest.raises(InputError, match="neighbours"):
        tagger.explain(["a text"], neighbours=0)
    with pytest.raises(InputError, match="k"):
        tagger.explain(["a text"], k=0)
    assert tagger.explain([]) == []


def test_explain_survives_save_and_load(tagger, tmp_path):
    tagger.add_label("new::echo", examples=_texts(tagger, 2), description="an echo of tests")
    tagger.save(tmp_path / "copy")
    again = Tagger.load(tmp_path / "copy")
    assert again.state.item_ids == tagger.state.item_ids
    assert again.state.descriptions["new::echo"] == "an echo of tests"
    texts = _texts(tagger, 4)
    assert again.explain(texts) == tagger.explain(texts)


def test_predict_explain_on_the_command_line(tiny_tagger_copy):
    args = ["predict", str(tiny_tagger_copy), "w1x0 w1x1 w1x2", "--explain", "-k", "2"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 1 and len(rows[0]["tags"]) == 2
    assert {"label", "score", "neighbours", "terms"} <= set(rows[0]["tags"][0])
    assert rows[0]["tags"] == Tagger.load(tiny_tagger_copy).explain(["w1x0 w1x1 w1x2"], k=2)[0]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0 and "nearest items with it: " in shown.output
    first = rows[0]["tags"][0]["neighbours"][0]["id"]
    assert first in shown.output


def test_explain_reports_the_features_each_tag_was_scored_with(tagger):
    """Deep tags (the tail, past the reranker's depth) and trained tags beside added labels
    carry the features their probability came from: cosine = similarity, and the vote of
    the nearest items, without the added label's examples for a trained label."""
    import dataclasses

    shallow = dataclasses.replace(tagger.state.reranker, depth=5)
    tagger = replaced(tagger, reranker=shallow)
    texts = _texts(tagger, 8)
    tagger.add_label("new::echo", examples=texts[:3])  # its examples join the item index
    found = tagger.explain(texts, k=12)
    assert [[t["label"] for t in tags] for tags in found] == \
        [[n for n, _ in tags] for tags in tagger.predict(texts, k=12)]
    state, s = tagger.state, tagger.state.scoring
    sims, order = _exact_nearest(tagger, texts)
    for i, tags in enumerate(found):
        for tag in tags:
            assert tag["features"]["cosine"] == pytest.approx(tag["similarity"], abs=1e-5)
            label = state.vocab.index(tag["label"])
            rows = order[i] if tag["label"] == "new::echo" else \
                order[i][order[i] < state.trained_items]
            rows = rows[:s.knn]
            weights = np.exp((sims[i, rows] - sims[i, rows].max()) / s.temperature)
            carried = state.item_labels[rows, label].toarray().ravel()
            assert tag["vote"] == pytest.approx(float(weights @ carried / weights.sum()),
                                                abs=1e-4)
