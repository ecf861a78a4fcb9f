"""Learned per-label biases (train.label_bias): trained, saved, used in scoring, kept in sync."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import TINY, build_tiny

from metricls import Tagger, load_config
from metricls.artifacts import load_tensors
from metricls.evaluation import evaluate
from metricls.pipeline.fit import BIAS_WEIGHTS
from metricls.pipeline.scoring import Scoring, with_label_bias
from metricls.pipeline.search import search
from metricls.pipeline.tag import combine


@pytest.fixture(scope="module")
def biased_dir(tmp_path_factory, synthetic_path):
    folder = tmp_path_factory.mktemp("biased") / "tagger"
    build_tiny(folder, synthetic_path, "train.label_bias=true", "train.schedule=cosine")
    return folder


def test_with_label_bias_shifts_candidates_only():
    scores = np.array([[0.5, 0.2, -np.inf]], dtype=np.float32)
    ids = np.array([[1, 0, -1]])
    scoring = Scoring(label_bias=[0.1, 0.3], bias_weight=0.5)
    np.testing.assert_allclose(with_label_bias(scores, ids, scoring), [[0.65, 0.25, -np.inf]])
    assert with_label_bias(scores, ids, Scoring()) is scores  # no biases: unchanged
    assert with_label_bias(scores, ids, dataclasses.replace(scoring, bias_weight=0.0)) is scores


def test_biases_are_learned_saved_and_used(biased_dir, synthetic_path):
    tensors, _ = load_tensors(biased_dir / "label_vectors.safetensors")
    tagger = Tagger.load(biased_dir)
    bias = tensors["label_bias"]
    assert bias.shape == (len(tagger.vocab),) and np.abs(bias).max() > 1e-3  # they moved
    np.testing.assert_allclose(tagger.state.scoring.label_bias, bias, rtol=1e-6)
    assert tagger.state.scoring.bias_weight in BIAS_WEIGHTS  # tuned on valid
    # prototype-only scores are (1 + cos + w * bias) / 2 over every label (the candidates
    # cover all of the tiny tagger's labels)
    texts = ["alpha beta gamma", "delta epsilon"]
    emb = tagger.embed(texts)
    blend = tagger.state.replace(reranker=None)  # the blend's scores
    scoring = dataclasses.replace(tagger.state.scoring, blend=1.0, bias_weight=1.0)
    scores, ids = combine(blend, search(blend, emb, candidates=len(tagger.vocab), knn=0), 3,
                          scoring)
    expected = (1 + emb @ tagger.prototypes.T + bias[None]) / 2
    np.testing.assert_array_equal(ids, np.argsort(-expected, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(scores, np.take_along_axis(expected, ids, 1), rtol=1e-5)
    # and it is a working tagger
    cfg = load_config(TINY, [f"data.path={synthetic_path}"])
    from metricls.data.dataset import Dataset
    report = evaluate(tagger, Dataset.load(cfg.data).test)
    assert report["P@1"] > 0.5


def test_living_labels_keep_the_biases_in_step(biased_dir, tmp_path):
    tagger = Tagger.load(biased_dir)
    bias = list(tagger.state.scoring.label_bias)
    L = len(bias)
    new = tagger.add_label("new::label", ["alpha beta", "alpha gamma"])
    assert len(tagger.state.scoring.label_bias) == L + 1
    assert tagger.state.scoring.label_bias[new] == pytest.approx(float(np.median(bias)))
    gone = tagger.remove_label(tagger.vocab.names[0])
    assert tagger.state.scoring.label_bias == [*bias[1:], pytest.approx(float(np.median(bias)))]
    assert gone == 0
    saved = tagger.save(tmp_path / "changed")
    again = Tagger.load(saved)
    assert again.state.scoring.label_bias == pytest.approx(tagger.state.scoring.label_bias)
    tensors, _ = load_tensors(saved / "label_vectors.safetensors")
    np.testing.assert_allclose(tensors["label_bias"], tagger.state.scoring.label_bias, rtol=1e-6)
