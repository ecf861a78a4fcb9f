"""TF-IDF prototypes: scikit-learn's weights without scikit-learn, prototypes that are the
normalised sums of their items, ranks, storage, and the tagger and living labels around them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from synthetic import make_items

import metricls.pipeline.tfidf as tfidf_module
from metricls import Tagger
from metricls.artifacts import load_tensors, read_json, save_tensors
from metricls.csr_keys import is_small
from metricls.errors import ArtifactError, InputError
from metricls.manifest import write_manifest
from metricls.pipeline.tag import combine, named, neighbours, reads_texts, score
from metricls.pipeline.tfidf import TfidfPrototypes, rank_in_rows

ITEMS = make_items(n_items=300, seed=3)
TEXTS = [item["text"] + " The C++ and Perl words, once." for item in ITEMS]


def _labels(items) -> sp.csr_matrix:
    names = sorted({n for item in items for n in item["labels"]})
    rows = [[names.index(n) for n in item["labels"]] for item in items]
    return sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32),
                          (np.repeat(np.arange(len(rows)), [len(r) for r in rows]),
                           np.concatenate(rows))), shape=(len(rows), len(names)))


def test_vectors_are_scikit_learns_sublinear_tfidf():
    model = TfidfPrototypes.fit(TEXTS, _labels(ITEMS))
    reference = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32).fit(TEXTS)
    assert model.terms == tuple(reference.get_feature_names_out())
    queries = ["w3x1 w3x1 w3x1 noise2 unseen", "nothing known here", TEXTS[0]]
    np.testing.assert_allclose(model.vectors(queries).toarray(),
                               reference.transform(queries).toarray(), atol=1e-6)
    assert model.vectors(["zzz qqq"]).nnz == 0  # no known term: an empty row, no NaN


def test_prototypes_are_the_normalised_sums_of_their_items():
    Y = _labels(ITEMS)
    model = TfidfPrototypes.fit(TEXTS, Y)
    X = model.vectors(TEXTS).toarray()
    sums = Y.T.toarray() @ X
    np.testing.assert_allclose(model.centroids.toarray(),
                               sums / np.linalg.norm(sums, axis=1, keepdims=True), atol=1e-6)
    # a text scores highest against its own label's prototype, on these well-separated labels
    S = model.scores(TEXTS).toarray()
    own = np.array([S[i, Y[i].indices].max() for i in range(len(TEXTS))])
    others = np.array([np.delete(S[i], Y[i].indices).max() for i in range(len(TEXTS))])
    assert (own > others).mean() > 0.9


def test_prototypes_keep_their_heaviest_terms(monkeypatch):
    monkeypatch.setattr(tfidf_module, "MAX_TERMS", 3)
    model = TfidfPrototypes.fit(TEXTS, _labels(ITEMS))
    C = model.centroids
    assert np.diff(C.indptr).max() == 3
    np.testing.assert_allclose(np.sqrt(C.multiply(C).sum(axis=1)).A.ravel(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dense_cells", [0, 1 << 22])  # read by binary search, and dense
def test_rank_in_rows_counts_the_entries_above(monkeypatch, dense_cells):
    monkeypatch.setattr("metricls.csr_keys.DENSE_CELLS", dense_cells)
    rng = np.random.default_rng(0)
    D = np.where(rng.random((40, 30)) < 0.3, rng.random((40, 30)), 0.0).astype(np.float32)
    D[0, :3] = 0.5  # ties do not count as above
    S = sp.csr_matrix(D)
    assert is_small(S) == (dense_cells > 0)
    values = np.take_along_axis(D, rng.integers(0, 30, (40, 6)), 1)
    values[0, 0] = 0.5
    expected = (D[:, None, :] > values[:, :, None]).sum(axis=2)
    np.testing.assert_array_equal(rank_in_rows(S, values), expected)
    assert rank_in_rows(sp.csr_matrix((0, 5)), np.zeros((0, 2))).shape == (0, 2)


def test_unit_rows_divide_by_the_norms_that_multiply_gives():
    X = sp.random(40, 300, density=0.1, format="csr", dtype=np.float32, random_state=5)
    X.data += 0.5
    shuffled = X.copy()  # the same rows with each row's entries in another order
    for i in range(40):
        a, b = shuffled.indptr[i], shuffled.indptr[i + 1]
        order = np.random.default_rng(i).permutation(b - a)
        shuffled.indices[a:b], shuffled.data[a:b] = X.indices[a:b][order], X.data[a:b][order]
    shuffled.has_sorted_indices = False
    for M in (X, shuffled):
        M = sp.csr_matrix(M)
        norms = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
        expected = M.data / np.repeat(norms, np.diff(M.indptr)).astype(np.float32)
        assert np.array_equal(tfidf_module._unit_rows(M).data, expected)  # bitwise


def test_tensors_round_trip_and_damage_is_named():
    model = TfidfPrototypes.fit(TEXTS, _labels(ITEMS))
    again = TfidfPrototypes.from_tensors(model.to_tensors(), "x/tfidf.safetensors")
    assert again.terms == model.terms
    np.testing.assert_array_equal(again.scores(TEXTS[:5]).toarray(),
                                  model.scores(TEXTS[:5]).toarray())
    t = model.to_tensors()
    with pytest.raises(ArtifactError,
                       match=r"x/tfidf\.safetensors: 'idf' is float32 of shape \(\d+,\), expected"):
        TfidfPrototypes.from_tensors(dict(t, idf=t["idf"][:-1]), "x/tfidf.safetensors")
    with pytest.raises(ArtifactError, match=r"x/tfidf\.safetensors: 'indices' span \[\d+, \d+\], "
                       r"expected within \[0, \d+\)"):
        TfidfPrototypes.from_tensors(dict(t, indices=t["indices"] + 10**6), "x/tfidf.safetensors")
    with pytest.raises(ArtifactError, match="x: 'data' missing"):
        TfidfPrototypes.from_tensors({k: v for k, v in t.items() if k != "data"}, "x")


def test_the_tagger_reads_texts_beside_embeddings(tiny_tagger_dir):
    tagger = Tagger.load(tiny_tagger_dir)
    state = tagger.state
    assert reads_texts(state) and state.tfidf is not None  # the tiny build kept its reranker
    texts = ["w0x1 w3x2 noise1", "w5x0 w5x1 noise2 noise3"]
    emb = tagger.embed(texts)
    expected = tagger.predict(texts, k=3)
    assert named(state, *score(state, emb, 3, texts), None, None) == expected
    with pytest.raises(InputError, match="reads the texts beside their embeddings"):
        score(state, emb, 3)
    with pytest.raises(InputError, match=r"texts: expected one per embedding \(2\), got 1"):
        score(state, emb, 3, texts[:1])
    # the TF-IDF features move the scores: with them zeroed the reranker scores differently
    found = neighbours(state, emb, 3, texts)
    with_tfidf = combine(state, found, 3, state.scoring)[0]
    without = combine(state, found._replace(tfidf=found.tfidf * 0), 3, state.scoring)[0]
    assert not np.allclose(with_tfidf, without)


def test_a_damaged_tfidf_file_is_refused_with_its_name(tiny_tagger_copy):
    path = tiny_tagger_copy / "tfidf.safetensors"
    tensors, meta = load_tensors(path)
    tensors["shape"] = tensors["shape"] + np.array([1, 0])
    save_tensors(path, tensors, meta)
    old = read_json(tiny_tagger_copy / "manifest.json")  # re-signed: only the shape is bad
    write_manifest(tiny_tagger_copy, data=old["data"], metrics=old["metrics"])
    with pytest.raises(ArtifactError, match=r"tfidf\.safetensors"):
        Tagger.load(tiny_tagger_copy)


def _row(tagger, i) -> np.ndarray:
    return tagger.state.tfidf.centroids[i].toarray().ravel()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def test_living_labels_keep_the_tfidf_prototypes_in_step(tiny_tagger_copy):
    tagger = Tagger.load(tiny_tagger_copy)
    examples = ["w9x0 w9x1 noise1 brandnew", "w9x2 noise1 noise1"]  # "brandnew": not a term
    new = tagger.add_label("facet9::new", examples)
    assert tagger.state.tfidf.centroids.shape[0] == len(tagger.labels)
    sums = tagger.state.tfidf.vectors(examples).toarray().sum(axis=0)
    assert sums.any()
    np.testing.assert_allclose(_row(tagger, new), _unit(sums), atol=1e-6)
    zero = tagger.add_label("facet9::described", description="w5x0 w5x1")
    np.testing.assert_allclose(_row(tagger, zero),
                               tagger.state.tfidf.vectors(["w5x0 w5x1"]).toarray().ravel(),
                               atol=1e-6)
    # merge: the old prototype counts as its `count` texts, as the dense prototype does
    old, count = _row(tagger, 0), tagger.vocab.counts[0]
    more = ["w0x0 w0x1 noise5"]
    tagger.update_label(tagger.labels[0], more, mode="merge")
    merged = count * old + tagger.state.tfidf.vectors(more).toarray().ravel()
    np.testing.assert_allclose(_row(tagger, 0), _unit(merged), atol=1e-5)
    tagger.update_label(tagger.labels[0], more, mode="replace")
    np.testing.assert_allclose(_row(tagger, 0), tagger.state.tfidf.vectors(more).toarray().ravel(),
                               atol=1e-6)
    before = tagger.state.tfidf.centroids.toarray()
    tagger.remove_label(tagger.labels[1])
    np.testing.assert_array_equal(tagger.state.tfidf.centroids.toarray(),
                                  np.delete(before, 1, axis=0))
    tagger.save(tiny_tagger_copy)
    again = Tagger.load(tiny_tagger_copy)
    np.testing.assert_array_equal(again.state.tfidf.centroids.toarray(),
                                  tagger.state.tfidf.centroids.toarray())
