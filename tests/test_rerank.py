"""The reranker: LightGBM trees that learn and round-trip, features mean what they say, it is fitted
on valid only when it helps out of fold, saved, loaded, and damaged files are refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import TINY, build_tiny, replaced, resized

from metricls import Tagger, load_config
from metricls.artifacts import load_tensors, read_json, save_tensors
from metricls.data.dataset import Dataset
from metricls.errors import ArtifactError
from metricls.evaluation import evaluate
from metricls.folder import RERANKER
from metricls.manifest import write_manifest
from metricls.pipeline.features import candidate_features, pick
from metricls.pipeline.fit import objective, out_of_fold, tune_reranker
from metricls.pipeline.rerank import FEATURES, Reranker, ranked
from metricls.pipeline.scoring import Scoring
from metricls.pipeline.search import Neighbours, search
from metricls.pipeline.state import LabelStats
from metricls.pipeline.tag import candidates
from metricls.pipeline.trees import MAX_TREES, BoostedTrees


def _data(n: int = 3000, seed: int = 0, features: int = len(FEATURES)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    X[:, -1] = np.round(X[:, -1])  # ties on a threshold
    y = (X[:, 0] + X[:, 1] * X[:, 2] + 0.5 * rng.normal(size=n)) > 0.5
    return X, y


def test_fitted_trees_learn_survive_a_round_trip_and_are_deterministic():
    X, y = _data()
    trees = BoostedTrees.fit(X, y, seed=7)
    assert 1 < trees.n_trees <= MAX_TREES  # stopped early on the held-out share
    Xt, yt = _data(800, seed=1)
    z = trees.logits(Xt)
    assert z.shape == (800,) and np.mean((z > 0) == yt) > 0.85  # it learned the interaction
    again = BoostedTrees.from_text(trees.to_text(), "here", len(FEATURES))
    np.testing.assert_array_equal(again.logits(Xt), z)
    np.testing.assert_array_equal(BoostedTrees.fit(X, y, seed=7).logits(Xt), z)
    assert BoostedTrees.fit(X, y, seed=8).to_text() != trees.to_text()  # the seed matters
    assert trees.logits(np.zeros((0, len(FEATURES)))).shape == (0,)


def test_big_batches_predict_on_every_core_with_the_same_logits(monkeypatch):
    import metricls.pipeline.trees as module

    X, y = _data()
    trees = BoostedTrees.fit(X, y, seed=0)
    one_thread = trees.logits(X)
    monkeypatch.setattr(module, "THREADS_FROM_ROWS", 1)
    np.testing.assert_allclose(trees.logits(X), one_thread, rtol=1e-12)


def test_tiny_training_sets_still_fit():
    X, y = _data(12)  # too few rows to hold any out
    trees = BoostedTrees.fit(X, y, seed=0)
    assert trees.n_trees >= 1 and np.isfinite(trees.logits(X)).all()


def test_damaged_trees_are_refused_with_the_file_named():
    X, y = _data(400)
    tensors = Reranker(BoostedTrees.fit(X, y, 0), 20).to_tensors()
    text = bytes(tensors["model"]).decode()

    def with_text(new: str) -> dict:
        return dict(tensors, model=np.frombuffer(new.encode(), np.uint8).copy())

    where = "x/reranker.safetensors"
    bad = {
        "a child past the tree": (resized(re.sub(r"left_child=\d+", "left_child=99", text,
                                                 count=1)), "tree 0 has nodes out of range"),
        "a feature past the features": (resized(re.sub(r"split_feature=\d+", "split_feature=10",
                                                       text, count=1)),
                                        "tree 0 has nodes out of range"),
        "a loop back to the root": (resized(re.sub(r"(right_child=\S+ )\S+", r"\g<1>0", text,
                                                   count=1)), "tree 0 has nodes out of range"),
        "a categorical split": (resized(text.replace("num_cat=0", "num_cat=1", 1)),
                                "tree 0 is not a plain tree"),
        "an infinite leaf": (resized(re.sub(r"leaf_value=\S+", "leaf_value=inf", text, count=1)),
                             r"tree 0 has leaf_value of \d+ values, expected \d+ plain numbers"),
        "an array a value short": (resized(re.sub(r"leaf_count=\S+ ", "leaf_count=", text,
                                                  count=1)),
                                   r"tree 0 has leaf_count of \d+ values"),
        "sizes one byte off": (re.sub(r"tree_sizes=(\d+)", lambda m: f"tree_sizes={int(m[1]) + 1}",
                                      text), "tree 0 has the line 'T'"),
        "no trees": ("tree\nversion=v4\n", "no trees in the LightGBM model text"),
        "garbage": ("tree\nTree=0\nnum_leaves=x\n", "no tree_sizes line"),
    }
    for name, (new, message) in bad.items():
        with pytest.raises(ArtifactError, match=f"{re.escape(where)}: {message}"):
            Reranker.from_tensors(with_text(new), where)
            pytest.fail(f"{name} was read")
    other = BoostedTrees.fit(*_data(400, features=3), 0)
    with pytest.raises(ArtifactError, match=f"trees over 3 features, expected {len(FEATURES)}"):
        Reranker.from_tensors(dict(tensors, model=np.frombuffer(
            other.to_text().encode(), np.uint8).copy()), where)
    with pytest.raises(ArtifactError, match="x/r: 'model' missing"):
        Reranker.from_tensors({k: v for k, v in tensors.items() if k != "model"}, "x/r")
    with pytest.raises(ArtifactError, match="x/r: 'model' is not UTF-8"):
        Reranker.from_tensors(dict(tensors, model=np.array([255, 254], np.uint8)), "x/r")
    with pytest.raises(ArtifactError, match="of 0 candidates, expected >= 1"):
        Reranker.from_tensors(dict(tensors, candidates=np.array([0])), "x/r")


@pytest.mark.parametrize("dense_cells", [0, 1 << 22])  # read by binary search, and dense
def test_candidate_features_read_the_searches(monkeypatch, dense_cells):
    monkeypatch.setattr("metricls.csr_keys.DENSE_CELLS", dense_cells)
    # 2 queries, 3 labels, 4 training items; query 1 found only 2 prototypes (padding -1)
    proto_scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.3, -np.inf]], np.float32)
    proto_ids = np.array([[2, 0, 1], [1, 0, -1]])
    item_scores = np.array([[0.9, 0.8], [0.7, 0.6]], np.float32)
    item_ids = np.array([[0, 1], [2, 3]])
    item_labels = sp.csr_matrix(np.array([[0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0]],
                                         np.float32))
    stats = LabelStats.of(item_labels)
    assert (stats._given_dense is not None) == (dense_cells > 0)
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


def test_out_of_fold_probabilities_never_come_from_trees_that_saw_the_query():
    """The tail weight is chosen on valid, where the built reranker was fitted: its own
    probabilities there are in-sample. `out_of_fold` scores each half of the queries with
    trees fitted on the other half, and only on the reranker's own depth."""
    found, Y, train = _miscalibrated(600)
    stub = _Stub(train)
    cand = candidates(stub, found, Scoring(), 6)
    y = (pick(Y, np.maximum(cand.ids, 0)) > 0) & (cand.ids >= 0)
    oof = out_of_fold(cand, y, 4, seed=0)
    even = np.arange(600) % 2 == 0
    flipped = y.copy()
    flipped[even] = ~flipped[even] & (cand.ids[even] >= 0)  # other answers for one half
    again = out_of_fold(cand, flipped, 4, seed=0)
    np.testing.assert_array_equal(again[even], oof[even])  # its own answers were never read
    assert not np.allclose(again[~even], oof[~even])  # the other half's trees read them
    deeper = y.copy()
    deeper[:, 4:] = ~deeper[:, 4:]  # past the depth: scored, never fitted on
    np.testing.assert_array_equal(out_of_fold(cand, deeper, 4, seed=0), oof)
    assert ((oof > 0) & (oof < 1)).all() and oof.shape == cand.ids.shape
    in_sample = tune_reranker(stub, found, Scoring(), Y, 0.0, seed=0)[0].score(cand.features)
    assert objective(_ranked_ids(in_sample, cand.ids), Y, stub.vocab.propensities()) >= \
        objective(_ranked_ids(oof, cand.ids), Y, stub.vocab.propensities())
    assert out_of_fold(cand, np.zeros_like(y), 4, seed=0) is None  # no true candidate


def _ranked_ids(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.take_along_axis(ids, np.argsort(-scores, axis=1, kind="stable"), 1)


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
    build_tiny(folder, synthetic_path, "index.rerank=false")
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
    # living labels: a new label is a candidate like any other (scored on the trained labels'
    # scale: near the top for a text of its words, not above every trained label)
    tagger.add_label("facet9::new", ["brandnew words here", "brandnew other words"])
    assert "facet9::new" in [label for label, _ in tagger.predict(["brandnew words"], k=3)[0]]


def test_a_damaged_reranker_is_refused_with_its_name(reranked_dir):
    tensors, meta = load_tensors(reranked_dir / RERANKER)
    text = resized(re.sub(r"left_child=\d+", "left_child=99", bytes(tensors["model"]).decode(),
                          count=1))
    tensors["model"] = np.frombuffer(text.encode(), np.uint8).copy()
    save_tensors(reranked_dir / RERANKER, tensors, meta)
    old = read_json(reranked_dir / "manifest.json")  # re-signed: only the trees are bad
    write_manifest(reranked_dir, data=old["data"], metrics=old["metrics"])
    with pytest.raises(ArtifactError, match=r"reranker\.safetensors: tree 0 has nodes out of "):
        Tagger.load(reranked_dir)


def test_trees_of_an_older_metricls_ask_for_a_rebuild(reranked_dir):
    tensors, meta = load_tensors(reranked_dir / RERANKER)
    save_tensors(reranked_dir / RERANKER, tensors, dict(meta, format="metricls-reranker/1"))
    old = read_json(reranked_dir / "manifest.json")
    write_manifest(reranked_dir, data=old["data"], metrics=old["metrics"])
    with pytest.raises(ArtifactError, match=r"reranker\.safetensors: trees of an older metricls "
                       r"\(format 'metricls-reranker/1', this one reads 'metricls-reranker/2'\); "
                       r".*build-index"):
        Tagger.load(reranked_dir)
