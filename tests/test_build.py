"""metricls/build.py: indexing a trained model and tuning its scoring."""

import dataclasses
import re

import numpy as np
import pytest
from conftest import TINY, entries

from metricls import build_index, load_config
from metricls.build import assemble_tagger, index_vectors
from metricls.data.dataset import Dataset
from metricls.errors import InputError, NotFittedError
from metricls.folder import read_learned, read_trained
from metricls.pipeline.scoring import PER_LABEL


def _unit(n, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def trained(tiny_tagger_dir):
    """(config, encoder, data, learned vectors, biases) of the tiny tagger folder."""
    cfg, model = read_trained(tiny_tagger_dir)
    data = Dataset.load(cfg.data)
    return cfg, model, data, *read_learned(tiny_tagger_dir, len(data.vocab), model.out_dim)


def test_auto_is_exact_below_exact_below(synthetic_path):
    vectors, queries = _unit(300), _unit(20, seed=1)
    for exact_below, expected in ((301, "flat"), (300, "hnsw")):
        cfg = load_config(TINY, [f"data.path={synthetic_path}", "index.backend=auto",
                                 f"index.exact_below={exact_below}"])
        index, info = index_vectors(vectors, queries, cfg, k=10, target_recall=0.9)
        assert index.backend == info["backend"] == expected and index.ntotal == 300
        assert ("recall@k" in info) == (expected == "hnsw")  # only an ANN index is tuned


def test_shards_are_capped_at_the_vectors(synthetic_path):
    cfg = load_config(TINY, [f"data.path={synthetic_path}", "index.shards=4"])
    index, info = index_vectors(_unit(1), _unit(3), cfg, k=5, target_recall=0.9)
    assert index.backend == "flat" and info == {"backend": "flat"}  # one vector: one shard
    index, info = index_vectors(_unit(3), _unit(3), cfg, k=5, target_recall=0.9)
    assert index.backend == "sharded" and info == {"backend": "flat", "shards": 3}
    assert len(index.parts) == 3 and index.ntotal == 3


def test_assemble_reports_its_steps_and_valid_metrics(trained):
    cfg, model, data, vectors, bias = trained
    tagger, report = assemble_tagger(cfg, model, data, vectors, label_bias=bias)
    assert set(report["seconds"]) == {"embed", "prototypes", "indexes", "tfidf", "scoring",
                                      "added_reranker",
                                      "valid_metrics"}
    assert report["backend"] == "flat" and report["prototypes"] == "learned"
    assert set(report["ann"]) == {"prototypes", "items"}
    assert not set(PER_LABEL) & set(report["scoring"])
    assert {"P@1", "R@10", "n_items"} <= set(tagger.metrics["valid"])
    assert tagger.metrics["valid"]["n_items"] == len(data.valid)
    np.testing.assert_array_equal(tagger.prototypes, vectors)  # learned: the trained vectors
    assert tagger.state.item_index.ntotal == len(data.train)


def test_assemble_without_learned_vectors_or_reranker(trained):
    cfg, model, data, vectors, _ = trained
    plain = dataclasses.replace(cfg, index=dataclasses.replace(cfg.index, rerank=False))
    tagger, report = assemble_tagger(plain, model, data, None)
    assert tagger.state.reranker is None and tagger.state.tfidf is None
    assert "tfidf" not in report["seconds"] and "tfidf" not in report  # only a reranker reads it
    assert tagger.prototypes.shape == vectors.shape
    assert not np.allclose(tagger.prototypes, vectors)
    np.testing.assert_allclose(np.linalg.norm(tagger.prototypes, axis=1), 1.0, atol=1e-5)


def test_build_index_needs_a_trained_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(NotFittedError, match=re.escape("run `metricls train` first")):
        build_index(folder)
    assert entries(folder) == [] and entries(tmp_path) == ["empty"]


def test_build_index_refuses_data_whose_labels_changed(tiny_tagger_copy, synthetic_path):
    before = {p: p.read_bytes() for p in tiny_tagger_copy.rglob("*") if p.is_file()}
    fewer = Dataset.load(load_config(TINY, [f"data.path={synthetic_path}",
                                            "data.exclude_labels=[facet0::tag0]"]).data)
    with pytest.raises(InputError, match=re.escape("the data changed since training: retrain")):
        build_index(tiny_tagger_copy, data=fewer)
    assert before == {p: p.read_bytes() for p in tiny_tagger_copy.rglob("*") if p.is_file()}
