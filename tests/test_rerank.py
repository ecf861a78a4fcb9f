"""The reranker: exported trees match scikit-learn, features mean what they say, it is fitted
on valid only when it helps out of fold, saved, loaded, and damaged files are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import TINY, replaced
from sklearn.ensemble import HistGradientBoostingClassifier

from metricls import Tagger, build_index, load_config, train_embedder
from metricls.artifacts import load_tensors, read_json, save_tensors
from metricls.data.dataset import Dataset
from metricls.errors import ArtifactError
from metricls.evaluation import evaluate
from metricls.folder import RERANKER
from metricls.manifest import write_manifest
from metricls.pipeline.features import candidate_features
from metricls.pipeline.fit import (
    LEARNING_RATE,
    LEAVES,
    TREES,
    fit_trees,
    objective,
    tune_reranker,
)
from metricls.pipeline.rerank import FEATURES, Reranker, ranked
from metricls.pipeline.scoring import Scoring
from metricls.pipeline.search import Neighbours, search
from metricls.pipeline.state import LabelStats
from metricls.pipeline.tag import candidates
from metricls.pipeline.trees import TreeEnsemble


def test_exported_trees_give_scikit_learns_logits_and_survive_a_round_trip():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 5))
    X[:, 4] = np.round(X[:, 4])  # ties on a threshold
    y = (X[:, 0] + X[:, 1] * X[:, 2] + 0.5 * rng.normal(size=3000)) > 0.5
    model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=0)
    model.fit(X, y)
    trees = TreeEnsemble.from_sklearn(model)
    assert len(set(trees.tree_depths.tolist())) > 1  # trees of several depths walk together
    Xt = np.vstack([rng.normal(size=(500, 5)), X[:50]])
    np.testing.assert_allclose(trees.logits(Xt), model.decision_function(Xt), atol=1e-9)
    np.testing.assert_allclose(trees.walk(Xt), model.decision_function(Xt), atol=1e-9)
    again = TreeEnsemble.from_tensors(trees.to_tensors(), "here")
    np.testing.assert_array_equal(again.logits(Xt), trees.logits(Xt))
    assert trees.logits(np.zeros((0, 5))).shape == (0,)


def test_averaged_ensembles_give_the_mean_logit_and_fit_trees_bags():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 4))
    y = (X[:, 0] * X[:, 1] + 0.5 * rng.normal(size=3000)) > 0
    models = [HistGradientBoostingClassifier(max_iter=20, random_state=s).fit(X, y)
              for s in range(3)]
    Xt = rng.normal(size=(400, 4))
    mean = np.mean([m.decision_function(Xt) for m in models], axis=0)
    averaged = TreeEnsemble.average([TreeEnsemble.from_sklearn(m) for m in models])
    np.testing.assert_allclose(averaged.logits(Xt), mean, atol=1e-9)
    np.testing.assert_allclose(averaged.walk(Xt), mean, atol=1e-9)
    assert averaged._compiled is not None  # the trees still lie one after another
    # fit_trees averages BAG ensembles with seeds seed, seed + 1, ...
    bagged = fit_trees(X, y, 7)
    single = TreeEnsemble.from_sklearn(HistGradientBoostingClassifier(
        max_iter=TREES, learning_rate=LEARNING_RATE, max_leaf_nodes=LEAVES,
        random_state=7).fit(X, y))
    assert len(bagged.roots) > len(single.roots)
    np.testing.assert_array_equal(fit_trees(X, y, 7).logits(Xt), bagged.logits(Xt))


def test_trees_that_are_single_leaves_score_their_value_either_way(monkeypatch):
    import metricls.pipeline.trees as rerank

    one = np.array([0])
    stump = TreeEnsemble(feature=one, threshold=np.array([np.inf]), left=one, right=one,
                         value=np.array([0.5]), roots=one, tree_depths=one, baseline=0.25,
                         n_features=3)
    monkeypatch.setattr(rerank, "COMPILED_FROM_ROWS", 1)
    assert stump._compiled is not None  # its probe rows need no threshold to draw from
    np.testing.assert_allclose(stump.logits(np.ones((5, 3))), 0.75)
    np.testing.assert_allclose(stump.walk(np.ones((5, 3))), 0.75)


def test_the_compiled_walk_is_used_when_it_agrees_and_numpy_walks_otherwise(monkeypatch):
    import sys

    import metricls.pipeline.trees as rerank

    rng = np.random.default_rng(2)
    X = rng.normal(size=(2000, 4))
    y = (X[:, 0] - X[:, 3] + 0.3 * rng.normal(size=2000)) > 0
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    Xt = rng.normal(size=(300, 4))
    trees = TreeEnsemble.from_sklearn(model)
    assert trees._compiled is not None  # scikit-learn's predictors over the exported arrays
    walked, numpy_walk = [], TreeEnsemble.walk
    monkeypatch.setattr(TreeEnsemble, "walk",
                        lambda self, rows: walked.append(len(rows)) or numpy_walk(self, rows))
    # small batches walk with numpy; from COMPILED_FROM_ROWS on, compiled (one thread, then all
    # from THREADS_FROM_ROWS): every way gives scikit-learn's logits
    for compiled_from, threads_from, numpy in ((10**9, 10**9, True), (1, 10**9, False),
                                               (1, 1, False)):
        monkeypatch.setattr(rerank, "COMPILED_FROM_ROWS", compiled_from)
        monkeypatch.setattr(rerank, "THREADS_FROM_ROWS", threads_from)
        walked.clear()
        np.testing.assert_allclose(trees.logits(Xt), model.decision_function(Xt), atol=1e-9)
        assert (walked == [300]) == numpy
    monkeypatch.setattr(TreeEnsemble, "walk", numpy_walk)
    monkeypatch.setattr(rerank, "COMPILED_FROM_ROWS", 1)
    # without scikit-learn (or with one whose private predictor moved): numpy, same logits
    monkeypatch.setitem(sys.modules, "sklearn.ensemble._hist_gradient_boosting.predictor", None)
    bare = TreeEnsemble.from_tensors(trees.to_tensors(), "here")
    assert bare._compiled is None
    np.testing.assert_allclose(bare.logits(Xt), model.decision_function(Xt), atol=1e-9)
    # trees stored out of order cannot be compiled per tree: numpy walks them
    monkeypatch.undo()
    t = trees.to_tensors()
    t["roots"] = t["roots"][::-1].copy()
    t["tree_depths"] = t["tree_depths"][::-1].copy()
    shuffled = TreeEnsemble.from_tensors(t, "here")
    assert shuffled._compiled is None
    np.testing.assert_allclose(shuffled.logits(Xt), model.decision_function(Xt), atol=1e-9)


def test_damaged_trees_are_refused_with_the_file_named():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(400, len(FEATURES))), rng.random(400) > 0.5
    trees = TreeEnsemble.from_sklearn(
        HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, y))
    tensors = Reranker(trees, 20).to_tensors()
    bad = dict(tensors, left=tensors["left"] + 10**6)
    with pytest.raises(ArtifactError, match=r"x/reranker\.safetensors: node 0 has children \d+ "
                       r"and \d+, expected both after it"):
        Reranker.from_tensors(bad, "x/reranker.safetensors")
    with pytest.raises(ArtifactError, match="x/r: 'value' missing"):
        Reranker.from_tensors({k: v for k, v in tensors.items() if k != "value"}, "x/r")
    with pytest.raises(ArtifactError,
                       match=f"of 0 candidates, expected {len(FEATURES)} features of >= 1"):
        Reranker.from_tensors(dict(tensors, candidates=np.array([0])), "x/r")


def test_candidate_features_read_the_searches():
    # 2 queries, 3 labels, 4 training items; query 1 found only 2 prototypes (padding -1)
    proto_scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.3, -np.inf]], np.float32)
    proto_ids = np.array([[2, 0, 1], [1, 0, -1]])
    item_scores = np.array([[0.9, 0.8], [0.7, 0.6]], np.float32)
    item_ids = np.array([[0, 1], [2, 3]])
    item_labels = sp.csr_matrix(np.array([[0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0]],
                                         np.float32))
    stats = LabelStats.of(item_labels)
    counts = np.log1p(np.array([1.0, 2.0, 2.0], np.float32))
    np.testing.assert_allclose(stats.log_counts, counts)
    # P(l | m): label 0's one item also carries 2; half of label 2's items carry 0
    np.testing.assert_allclose(stats.given.toarray(), [[0, 0, 1], [0, 0, 0], [0.5, 0, 0]])
    # TF-IDF cosines to the 3 labels; query 1 shares no term with label 1
    tfidf = sp.csr_matrix(np.array([[0.2, 0.7, 0.4], [0.3, 0.0, 0.6]], np.float32))
    found = Neighbours(proto_scores, proto_ids, item_scores, item_ids, tfidf)
    scoring = Scoring(knn=2, temperature=1e-3)
    cand = candidate_features(found, item_labels, stats, scoring, 3)
    X = dict(zip(FEATURES, np.moveaxis(cand.features, -1, 0)))
    np.testing.assert_array_equal(cand.ids, proto_ids)
    np.testing.assert_allclose(X["cosine"][0], [0.9, 0.5, 0.1], rtol=1e-6)
    assert X["cosine"][1, 2] < X["cosine"][1, 1] - 1  # padding sits far below
    np.testing.assert_allclose(X["log_count"][0], counts[[2, 0, 1]])
    # temperature 1e-3: the nearest item decides the vote; the wide vote is flat over both
    np.testing.assert_allclose(X["vote"][0], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(X["vote_wide"][0], [1.0, 0.5, 0.0], atol=0.05)
    np.testing.assert_allclose(X["vote"][1], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(X["log_rank"][0], np.log1p([0, 1, 2]), rtol=1e-6)
    np.testing.assert_allclose(X["gap_to_top"][0], [0.0, 0.4, 0.8], atol=1e-6)
    np.testing.assert_allclose(X["top_cosine"][1], [0.8, 0.8, 0.8], rtol=1e-6)
    # query 0 leads with 2 (cos 0.9), then 0 (0.5): 0 gets 0.9 * P(0 | 2), 2 gets 0.5 * P(2 | 0)
    np.testing.assert_allclose(X["co_occurrence"][0], [0.5 * 1.0, 0.9 * 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(X["co_occurrence"][1], [0.0, 0.0, 0.0], atol=1e-6)
    # the candidates' TF-IDF cosines (labels 2, 0, 1 / 1, 0) and log(1 + labels above them)
    np.testing.assert_allclose(X["tfidf_cosine"][0], [0.4, 0.2, 0.7], rtol=1e-6)
    np.testing.assert_allclose(X["tfidf_log_rank"][0], np.log1p([1, 2, 0]), rtol=1e-6)
    np.testing.assert_allclose(X["tfidf_cosine"][1, :2], [0.0, 0.3], rtol=1e-6)
    np.testing.assert_allclose(X["tfidf_log_rank"][1, :2], np.log1p([2, 1]), rtol=1e-6)
    # a tagger without TF-IDF prototypes (or no texts): the two features are 0
    plain = candidate_features(found._replace(tfidf=None), item_labels, stats, scoring, 3)
    np.testing.assert_array_equal(plain.features[..., -2:], 0.0)
    np.testing.assert_array_equal(plain.features[..., :-2], cand.features[..., :-2])


def test_ranked_sorts_puts_padding_last_and_pads_to_k():
    scores, ids = ranked(np.array([[0.2, 0.9, 0.5]], np.float32), np.array([[4, 7, -1]]), 5)
    assert ids.tolist() == [[7, 4, -1, -1, -1]]
    assert scores[0, :2].tolist() == pytest.approx([0.9, 0.2]) and np.isinf(scores[0, 2:]).all()


def _miscalibrated(n: int, seed: int = 0) -> tuple[Neighbours, sp.csr_matrix, sp.csr_matrix]:
    """Queries whose true label is broad (label 0, low cosine) or narrow (labels 1-5, high
    cosine): ranking by cosine puts a wrong narrow label first for most broad queries."""
    rng = np.random.default_rng(seed)
    L = 6
    true = np.where(rng.random(n) < 0.6, 0, rng.integers(1, L, n))
    cos = rng.uniform(0.55, 0.75, (n, L))  # narrow labels look alike when wrong ...
    cos[np.arange(n), true] = np.where(true == 0, rng.uniform(0.6, 0.7, n),
                                       rng.uniform(0.85, 0.95, n))  # ... and high when right
    order = np.argsort(-cos, axis=1)
    Y = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), true)), shape=(n, L))
    train = sp.csr_matrix(np.eye(L, dtype=np.float32)[np.r_[np.zeros(60, int), np.arange(L)]])
    found = Neighbours(np.take_along_axis(cos, order, 1).astype(np.float32), order,
                       np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64))
    return found, Y, train


class _Stub:
    """What `tune_reranker` reads of a tagger's state."""

    def __init__(self, train: sp.csr_matrix) -> None:
        from metricls.data.labels import LabelVocab

        self.item_labels = train
        self.label_stats = LabelStats.of(train)
        self.vocab = LabelVocab.fit([[f"l{j}"] for j in train.indices])


def test_the_reranker_learns_to_rank_a_broad_label_first_and_is_kept():
    found, Y, train = _miscalibrated(1200)
    stub = _Stub(train)
    props = stub.vocab.propensities()
    plain = objective(found.proto_ids, Y, props)
    reranker, (scores, ids), report = tune_reranker(stub, found, Scoring(), Y, plain, seed=0)
    assert report["kept"] and report["out_of_fold"] > plain
    real = scores[ids >= 0]  # 6 labels: padded to 20 with -inf
    assert reranker is not None and real.size == 6 * 1200 and ((real > 0) & (real < 1)).all()
    assert _p1(found.proto_ids, Y) < 0.6 < 0.9 < _p1(ids, Y)  # out of fold: unseen queries
    # fresh queries from the same process
    test, Y_test, _ = _miscalibrated(500, seed=1)
    _, test_ids = reranker.top_k(candidates(stub, test, Scoring(), reranker.depth), 5)
    assert _p1(test_ids, Y_test) > 0.9 > 0.6 > _p1(test.proto_ids, Y_test)


def _p1(ids: np.ndarray, Y: sp.csr_matrix) -> float:
    return float(np.mean(np.asarray(Y[np.arange(len(ids)), ids[:, 0]]).ravel()))


def test_the_reranker_is_skipped_when_valid_cannot_support_it():
    found, Y, train = _miscalibrated(30)
    assert tune_reranker(_Stub(train), found, Scoring(), Y, 0.0, 0)[2].startswith(
        "skipped: 30 validation items")
    found, Y, train = _miscalibrated(200)
    none_true = sp.csr_matrix(Y.shape, dtype=np.float32)
    assert tune_reranker(_Stub(train), found, Scoring(), none_true, 0.0, 0)[2].startswith(
        "skipped: a validation fold has no true")
    # kept only when it beats the plain scoring out of fold
    reranker, _, report = tune_reranker(_Stub(train), found, Scoring(), Y, 99.0, 0)
    assert reranker is None and report["kept"] is False


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory, synthetic_path):
    folder = tmp_path_factory.mktemp("plain") / "tagger"
    cfg = load_config(TINY, [f"data.path={synthetic_path}", "index.rerank=false"])
    train_embedder(cfg, out=folder)
    build_index(folder)
    return folder


def test_build_index_records_its_reranker_decision(tiny_tagger_dir, plain_dir):
    report = read_json(tiny_tagger_dir / "manifest.json")["build"]["rerank"]
    # kept only when it beats the blend out of fold; the TF-IDF prototypes go with it
    assert set(report) == {"kept", "out_of_fold", "plain"}
    assert report["kept"] == (report["out_of_fold"] > report["plain"])
    assert (tiny_tagger_dir / RERANKER).exists() == report["kept"]
    assert (tiny_tagger_dir / "tfidf.safetensors").exists() == report["kept"]
    card = (tiny_tagger_dir / "README.md").read_text()
    assert f"reranker {{'kept': {report['kept']}, 'out_of_fold': {report['out_of_fold']}" in card
    assert read_json(plain_dir / "manifest.json")["build"]["rerank"].startswith("off")
    plain = Tagger.load(plain_dir).state
    assert plain.reranker is None and not (plain_dir / RERANKER).exists()
    assert plain.tfidf is None and not (plain_dir / "tfidf.safetensors").exists()


@pytest.fixture
def reranked_dir(tiny_tagger_copy, synthetic_path) -> Path:
    """The tiny tagger with a reranker fitted on its valid split (kept whatever it scores)."""
    tagger = Tagger.load(tiny_tagger_copy)
    data = Dataset.load(load_config(TINY, [f"data.path={synthetic_path}"]).data)
    found = search(tagger.state, tagger.embed(data.valid), candidates=20, knn=50,
                   texts=data.valid.texts)
    reranker, _, report = tune_reranker(tagger.state, found, tagger.state.scoring,
                                        data.labels("valid"), plain=-1.0, seed=0)
    assert report["kept"]
    replaced(tagger, reranker=reranker).save(tiny_tagger_copy)
    return tiny_tagger_copy


def test_a_reranker_is_saved_loaded_and_scores_probabilities(reranked_dir, synthetic_path):
    tagger = Tagger.load(reranked_dir)
    assert tagger.state.reranker is not None
    texts = ["w0x1 w3x2 noise1", "w5x0 w5x1 noise2 noise3", "noise4"]
    scores, ids = tagger.predict_scores(texts, k=5)
    assert ((scores > 0) & (scores < 1)).all() and (np.diff(scores, axis=1) <= 0).all()
    np.testing.assert_array_equal(Tagger.load(reranked_dir).predict_scores(texts, k=5)[1], ids)
    data = Dataset.load(load_config(TINY, [f"data.path={synthetic_path}"]).data)
    assert evaluate(tagger, data.test)["P@1"] > 0.8
    # k beyond the reranker's depth still ranks every label once
    wide = tagger.predict_scores(texts[:1], k=len(tagger.vocab))[1][0]
    assert sorted(wide[wide >= 0].tolist()) == list(range(len(tagger.vocab)))
    # living labels: a new label is a candidate like any other
    tagger.add_label("facet9::new", ["brandnew words here", "brandnew other words"])
    assert tagger.predict(["brandnew words"], k=1)[0][0][0] == "facet9::new"


def test_a_damaged_reranker_is_refused_with_its_name(reranked_dir):
    tensors, meta = load_tensors(reranked_dir / RERANKER)
    tensors["roots"] = tensors["roots"] + 10**6
    save_tensors(reranked_dir / RERANKER, tensors, meta)
    old = read_json(reranked_dir / "manifest.json")  # re-signed: only the trees are bad
    write_manifest(reranked_dir, data=old["data"], metrics=old["metrics"])
    with pytest.raises(ArtifactError, match=r"reranker\.safetensors: 'roots' span \[1000000, "):
        Tagger.load(reranked_dir)
