"""ANN backends: recall against exact search, persistence, add/remove, padding, errors, tuning."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest

from metricls.ann import (
    BACKENDS,
    LARGE_INDEX,
    AnnIndex,
    auto_params,
    choose_backend,
    load_index,
    make_index,
    recall_at_k_vs_exact,
    tune_index,
)
from metricls.ann import faiss_index as faiss_module
from metricls.ann.base import probe_steps
from metricls.errors import ArtifactError, InputError, NotFittedError

DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _make(backend: str, **params) -> AnnIndex:
    if backend == "scann":
        pytest.importorskip("scann")
    return make_index(backend, DIM, **params)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """2,000 unit vectors around 50 centres, 300 perturbed copies as queries, exact top 10,
    and 20 new vectors from the same distribution."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, DIM))
    points = _unit(centres[rng.integers(0, 50, 2020)] + 0.3 * rng.normal(size=(2020, DIM)))
    vectors = points[:2000]
    queries = _unit(vectors[:300] + 0.05 * rng.normal(size=(300, DIM)))
    exact = make_index("flat", DIM)
    exact.build(vectors)
    exact_scores, exact_ids = exact.search(queries, 10)
    return {"vectors": vectors, "queries": queries, "exact_ids": exact_ids,
            "exact_scores": exact_scores, "new": points[2000:]}


@pytest.fixture(scope="module", params=["flat", "hnsw", "ivf", "scann"])
def built(request, data, tmp_path_factory) -> tuple[AnnIndex, Path]:
    """One index per backend over `data`, and a saved copy of it (load it to mutate)."""
    index = _make(request.param)
    index.build(data["vectors"])
    folder = tmp_path_factory.mktemp(request.param) / "saved"
    index.save(folder)
    return index, folder


def test_backends_listed():
    assert BACKENDS == ("flat", "hnsw", "ivf", "scann", "sharded")


def test_reconstruct_rows_reads_the_vectors_of_some_ids(built):
    index, _ = built
    ids = np.array([5, 0, 1999, 5])
    np.testing.assert_array_equal(index.reconstruct_rows(ids), index.reconstruct()[ids])
    assert index.reconstruct_rows(np.zeros(0, np.int64)).shape == (0, index.dim)


def test_recall_against_exact(built, data):
    index, _ = built
    scores, ids = index.search(data["queries"], 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (300, 10)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    recall = recall_at_k_vs_exact(ids, data["exact_ids"])
    if index.backend == "flat":
        assert recall == 1.0
        np.testing.assert_allclose(scores, data["exact_scores"], atol=1e-6)
    assert recall >= 0.95, f"{index.backend}: recall@10 {recall:.3f}"


def test_save_load_moved_folder_gives_identical_results(built, data, tmp_path):
    index, folder = built
    moved = tmp_path / "elsewhere" / "index"
    shutil.copytree(folder, tmp_path / "copy")
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "copy", moved)  # the folder moved: no absolute paths may be left
    loaded = load_index(moved)
    assert type(loaded) is type(index) and loaded.ntotal == 2000 and loaded.dim == DIM
    expected, got = index.search(data["queries"], 10), loaded.search(data["queries"], 10)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    meta = json.loads((moved / "backend.json").read_text())
    assert {k: meta[k] for k in ("backend", "metric", "dim", "n")} == {
        "backend": index.backend, "metric": "ip", "dim": DIM, "n": 2000}
    assert meta["params"] == index.params
    assert not list(moved.rglob("*.pkl"))
    for text_file in moved.rglob("*.pbtxt"):
        assert str(tmp_path) not in text_file.read_text()


def test_add_then_search_finds_new_vectors_also_after_reload(built, data, tmp_path):
    _, folder = built
    index = load_index(folder)
    index.set_search_params(**(index.search_param_grid(1) or [{}])[-1])  # the most exact
    new_ids = index.add(data["new"][:10])
    np.testing.assert_array_equal(new_ids, np.arange(2000, 2010))
    assert index.ntotal == 2010
    _, ids = index.search(data["new"][:10], 1)
    np.testing.assert_array_equal(ids[:, 0], new_ids)
    index.save(tmp_path / "grown")
    reloaded = load_index(tmp_path / "grown")
    np.testing.assert_array_equal(reloaded.search(data["new"][:10], 1)[1][:, 0], new_ids)
    more = reloaded.add(data["new"][10:])
    np.testing.assert_array_equal(more, np.arange(2010, 2020))
    np.testing.assert_array_equal(reloaded.search(data["new"][10:], 1)[1][:, 0], more)
    assert reloaded.add(np.zeros((0, DIM))).shape == (0,)


@pytest.mark.parametrize("backend", ["flat", "hnsw", "ivf", "scann"])
def test_k_larger_than_ntotal_is_padded(backend, data):
    index = _make(backend)
    index.build(data["vectors"][:5])
    scores, ids = index.search(data["vectors"][:3], 8)
    assert ids.shape == scores.shape == (3, 8)
    assert np.all(ids[:, 5:] == -1) and np.all(scores[:, 5:] == -np.inf)
    for row in ids:
        assert sorted(row[:5]) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(ids[:, 0], [0, 1, 2])
    empty_scores, empty_ids = index.search(np.zeros((0, DIM), np.float32), 4)
    assert empty_scores.shape == empty_ids.shape == (0, 4)


def test_padding_of_results_not_found(built, data):
    """k close to ntotal: approximate backends find fewer; the rest is -1 / -inf, never 0/NaN."""
    index, _ = built
    scores, ids = index.search(data["queries"][:3], 2100)
    assert np.all(ids[:, 2000:] == -1) and np.all(scores[:, 2000:] == -np.inf)
    assert not np.isnan(scores).any()
    np.testing.assert_array_equal(ids == -1, scores == -np.inf)
    for row_ids, row_scores in zip(ids, scores, strict=True):
        found = row_ids >= 0
        assert len(set(row_ids[found])) == found.sum()
        assert np.all(np.diff(row_scores[found]) <= 1e-6)


def test_remove(data, tmp_path):
    hnsw = make_index("hnsw", DIM, ef_construction=40)
    hnsw.build(data["vectors"][:50])
    with pytest.raises(InputError, match="HNSW graph cannot remove vectors"):
        hnsw.remove(np.array([1]))
    flat = make_index("flat", DIM)
    flat.build(data["vectors"][:50])
    flat.remove(np.array([3, 7]))
    assert flat.ntotal == 48
    _, ids = flat.search(data["vectors"][:50], 50)
    assert not np.isin(ids, [3, 7]).any() and ids[10, 0] == 10 and ids[0, -2] == -1
    np.testing.assert_array_equal(flat.add(data["new"][:2]), [50, 51])
    flat.save(tmp_path / "flat")
    loaded = load_index(tmp_path / "flat")
    np.testing.assert_array_equal(loaded.search(data["new"][:2], 1)[1][:, 0], [50, 51])
    np.testing.assert_array_equal(loaded.add(data["new"][2:3]), [52])
    with pytest.raises(InputError, match=r"ids: \[3\] not in the index"):
        loaded.remove([3])
    with pytest.raises(InputError, match="cannot remove"):
        make_index("ivf", DIM).remove([0])


def test_tune_index_reaches_target(built, data):
    index = load_index(built[1])
    vectors = data["vectors"] if index.backend != "ivf" else None  # ivf: reconstructed
    result = tune_index(index, data["queries"], k=10, target_recall=0.99, vectors=vectors)
    assert result["k"] == 10 and result["recall@k"] >= 0.99
    assert all(index.params[name] == value for name, value in result["params"].items())
    recall = recall_at_k_vs_exact(index.search(data["queries"], 10)[1], data["exact_ids"])
    assert recall >= 0.99
    if index.backend == "flat":
        assert result == {"params": {}, "recall@k": 1.0, "k": 10}
    else:
        assert result["params"]


def test_recall_vs_exact_hand_computed():
    # row 0: {1, 2} of {1, 2, 9} found -> 2/3; row 1: {4} of {4} -> 1; row 2: no exact ids
    approx = np.array([[1, 2, 3], [4, 5, -1], [0, 1, 2]])
    exact = np.array([[1, 2, 9], [4, -1, -1], [-1, -1, -1]])
    assert recall_at_k_vs_exact(approx, exact) == pytest.approx((2 / 3 + 1) / 2)


@pytest.mark.parametrize("backend", ["flat", "ivf"])
def test_gpu_failure_falls_back_to_cpu_with_warning(backend, data, monkeypatch):
    def no_gpu_resources():
        raise RuntimeError("CUDA driver missing")

    monkeypatch.setattr(faiss_module, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", no_gpu_resources, raising=False)
    cpu = make_index(backend, DIM, use_gpu=False)
    cpu.build(data["vectors"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = cpu.search(data["queries"], 5)  # use_gpu=False: no GPU attempt
    index = make_index(backend, DIM)
    index.build(data["vectors"])
    with pytest.warns(RuntimeWarning, match="GPU search failed.*searching on the CPU"):
        got = index.search(data["queries"], 5)
    np.testing.assert_array_equal(got[1], expected[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.search(data["queries"], 5)  # warned once only


def test_ivf_with_product_quantization(data):
    index = make_index("ivf", DIM, pq_m=8, nprobe=16)
    index.build(data["vectors"])
    _, ids = index.search(data["queries"], 10)
    assert recall_at_k_vs_exact(ids, data["exact_ids"]) > 0.5
    assert index.memory_bytes() < data["vectors"].nbytes


def test_memory_bytes(built, data):
    index, _ = built
    assert index.memory_bytes() >= data["vectors"].nbytes * 0.9


def test_scann_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scann", None)
    with pytest.raises(InputError, match=r"pip install metricls\[scann\]"):
        make_index("scann", DIM).build(np.eye(DIM, dtype=np.float32))


@pytest.mark.parametrize("call, error, match", [
    (lambda i: i.build(np.ones(DIM)), InputError, r"vectors: expected a 2-D array of shape"),
    (lambda i: i.build(np.ones((3, 5))), InputError, r"shape \(n, 32\), got shape \(3, 5\)"),
    (lambda i: i.build(np.zeros((0, DIM))), InputError, "vectors: expected at least one row"),
    (lambda i: i.build(np.full((2, DIM), np.nan)), InputError, "vectors: 2 row.*NaN"),
    (lambda i: i.build(np.full((2, DIM), 1e300)), InputError, "NaN or infinite"),
    (lambda i: i.build([["a"] * DIM]), InputError, "vectors: expected a numeric array"),
    (lambda i: i.build([[1.0], [1.0, 2.0]]), InputError, "vectors: expected a 2-D numeric"),
    (lambda i: i.search(np.ones((1, DIM)), 1), NotFittedError, "call build"),
    (lambda i: i.save("/nonexistent/x"), NotFittedError, "call build"),
    (lambda i: i.set_search_params(m=3), InputError, "not search parameters"),
    (lambda i: i.set_search_params(ef_search=0), InputError, "ef_search: expected a positive"),
])
def test_bad_input_before_faiss(call, error, match):
    with pytest.raises(error, match=match):
        call(make_index("hnsw", DIM))


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_bad_k(built, data, k):
    with pytest.raises(InputError, match="k: expected a positive int"):
        built[0].search(data["queries"][:2], k)


def test_bad_queries(built):
    with pytest.raises(InputError, match=r"queries: expected a 2-D array of shape \(n, 32\)"):
        built[0].search(np.ones((2, 31), np.float32), 3)


@pytest.mark.parametrize("backend, params, match", [
    ("annoy", {}, r"backend: expected one of \['flat', 'hnsw', 'ivf', 'scann', 'sharded'\]"),
    ("hnsw", {"nprobe": 3}, "unknown parameter"),
    ("hnsw", {"m": 0}, "m: expected a positive int"),
    ("ivf", {"pq_m": 5}, "pq_m: must divide dim=32"),
    ("flat", {"use_gpu": "yes"}, "use_gpu: expected None, True or False"),
    ("scann", {"quantization_threshold": 2}, "quantization_threshold"),
])
def test_bad_make_index(backend, params, match):
    with pytest.raises(InputError, match=match):
        make_index(backend, DIM, **params)
    with pytest.raises(InputError, match="dim: expected a positive int"):
        make_index("flat", 0)


def test_ivf_too_few_vectors_to_train():
    with pytest.raises(InputError, match="nlist=64 needs at least 64 vectors"):
        make_index("ivf", DIM, nlist=64).build(np.eye(DIM, dtype=np.float32))


def test_bad_artifacts(built, tmp_path):
    _, folder = built
    with pytest.raises(ArtifactError, match=r"backend\.json: missing"):
        load_index(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    meta_path = broken / "backend.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text("{not json")
    with pytest.raises(ArtifactError, match=r"backend\.json: not readable JSON"):
        load_index(broken)
    meta_path.write_text(json.dumps({**meta, "backend": "annoy"}))
    with pytest.raises(ArtifactError, match="unknown backend 'annoy'"):
        load_index(broken)
    meta_path.write_text(json.dumps({**meta, "n": 7}))
    with pytest.raises(ArtifactError, match="n=7"):
        load_index(broken)
    if meta["backend"] == "scann":
        meta_path.write_text(json.dumps(meta))
        (broken / "scann" / "scann_docids.pkl").write_bytes(b"not loaded")
        with pytest.raises(ArtifactError, match="never loads pickles"):
            load_index(broken)


def test_corrupt_faiss_file(data, tmp_path):
    index = make_index("hnsw", DIM, ef_construction=40)
    index.build(data["vectors"][:100])
    index.save(tmp_path / "h")
    (tmp_path / "h" / "faiss.index").write_bytes(b"garbage" * 10)
    with pytest.raises(ArtifactError, match=r"faiss\.index: not a readable FAISS index"):
        load_index(tmp_path / "h")
    flat = make_index("flat", DIM)
    flat.build(data["vectors"][:100])
    flat.save(tmp_path / "f")
    meta = json.loads((tmp_path / "f" / "backend.json").read_text())
    (tmp_path / "f" / "backend.json").write_text(json.dumps({**meta, "backend": "hnsw",
                                                             "params": {}}))
    with pytest.raises(ArtifactError, match="holds a IndexFlatIP, expected IndexHNSWFlat"):
        load_index(tmp_path / "f")
    (tmp_path / "f" / "faiss.index").unlink()
    with pytest.raises(ArtifactError, match=r"faiss\.index: missing"):
        load_index(tmp_path / "f")


def test_hnsw_grows_by_1000_prototypes_without_rebuild(tmp_path):
    rng = np.random.default_rng(7)
    base = _unit(rng.normal(size=(2000, DIM)))
    new = _unit(rng.normal(size=(1000, DIM)))
    index = _make("hnsw")
    index.build(base)
    index.save(tmp_path / "v1")
    loaded = load_index(tmp_path / "v1")
    ids = loaded.add(new)
    np.testing.assert_array_equal(ids, np.arange(2000, 3000))
    found = loaded.search(new, 1)[1][:, 0]
    assert (found == ids).mean() >= 0.99
    loaded.save(tmp_path / "v2")
    again = load_index(tmp_path / "v2")
    assert again.ntotal == 3000
    assert (again.search(new, 1)[1][:, 0] == ids).mean() >= 0.99
    np.testing.assert_array_equal(again.search(base[:50], 1)[1][:, 0], np.arange(50))


def test_probe_steps_halfway_between_powers_of_two():
    assert probe_steps(1) == [1] and probe_steps(3) == [1, 2, 3]
    assert probe_steps(50) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 50]


@pytest.mark.parametrize("backend, params", [
    ("ivf", {"pq_m": 8, "nprobe": 16}),
    ("hnsw", {"storage": "sq8", "ef_search": 16}),
])
def test_rerank_restores_recall_from_vectors_kept_on_disk(backend, params, data, tmp_path):
    codes = make_index(backend, DIM, **params)
    codes.build(data["vectors"])
    reranked = make_index(backend, DIM, **params, rerank=4)
    reranked.build(data["vectors"])
    floats = make_index(backend, DIM)
    floats.build(data["vectors"])
    assert reranked.memory_bytes() == codes.memory_bytes()  # the floats are not counted
    assert floats.memory_bytes() - codes.memory_bytes() >= data["vectors"].nbytes * 0.7
    before = recall_at_k_vs_exact(codes.search(data["queries"], 10)[1], data["exact_ids"])
    after = recall_at_k_vs_exact(reranked.search(data["queries"], 10)[1], data["exact_ids"])
    assert after > before + 0.02 and after > 0.9
    scores, ids = reranked.search(data["queries"][:5], 10)  # exact scores of the ids returned
    expected = np.einsum("qkd,qd->qk", data["vectors"][ids], data["queries"][:5])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    reranked.save(tmp_path / "i")
    loaded = load_index(tmp_path / "i")
    assert isinstance(loaded._exact, np.memmap)  # on disk, not read into memory
    np.testing.assert_array_equal(loaded.search(data["queries"], 10)[1],
                                  reranked.search(data["queries"], 10)[1])
    np.testing.assert_array_equal(loaded.reconstruct(), data["vectors"])  # exact, not decoded
    np.testing.assert_array_equal(loaded.reconstruct_rows(np.array([7, 3])),
                                  data["vectors"][[7, 3]])
    assert loaded.add(data["new"][:2]).tolist() == [2000, 2001]
    assert loaded.search(data["new"][:2], 10)[1][:, 0].tolist() == [2000, 2001]
    (tmp_path / "i" / "vectors.npy").unlink()
    with pytest.raises(ArtifactError, match=r"vectors.npy: missing or not a readable .npy file"):
        load_index(tmp_path / "i")
    np.save(tmp_path / "i" / "vectors.npy", data["vectors"][:10])
    with pytest.raises(ArtifactError, match=r"expected float32 of shape \(2000, 32\)"):
        load_index(tmp_path / "i")


def test_hnsw_storage_is_checked_against_the_file(data, tmp_path):
    index = make_index("hnsw", DIM, storage="sq8")
    index.build(data["vectors"])
    index.save(tmp_path / "i")
    meta = json.loads((tmp_path / "i" / "backend.json").read_text())
    meta["params"]["storage"] = "flat"
    (tmp_path / "i" / "backend.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="holds a IndexHNSWSQ, expected IndexHNSWFlat for "
                                            "storage 'flat'"):
        load_index(tmp_path / "i")
    with pytest.raises(InputError, match="storage: expected one of \\['flat', 'sq8'\\], got 'pq'"):
        make_index("hnsw", DIM, storage="pq")
    with pytest.raises(InputError, match="rerank is not supported across shards"):
        make_index("sharded", DIM, base="ivf", base_params={"rerank": 2})


def test_auto_builds_reranked_8bit_hnsw_for_large_sets():
    assert choose_backend("auto", 19_999) == "flat" and choose_backend("auto", 20_000) == "hnsw"
    assert auto_params("hnsw", LARGE_INDEX - 1) == {}
    assert auto_params("hnsw", LARGE_INDEX) == {"storage": "sq8", "rerank": 2,
                                                "ef_construction": 160}
    assert auto_params("flat", 10**7) == {}
    make_index("hnsw", DIM, **auto_params("hnsw", LARGE_INDEX))  # valid parameters


def test_scann_spills_with_soar_and_checks_it(data):
    pytest.importorskip("scann")
    with pytest.raises(InputError, match="soar_lambda: expected None"):
        make_index("scann", DIM, soar_lambda=-1)
    spilled, plain = (make_index("scann", DIM, soar_lambda=s, brute_force_below=100,
                                 leaves_to_search=2) for s in (1.5, None))
    for index in (spilled, plain):
        index.build(data["vectors"])
    recall = [recall_at_k_vs_exact(i.search(data["queries"], 10)[1], data["exact_ids"])
              for i in (spilled, plain)]
    assert recall[0] > recall[1]  # the same leaves searched find more with spilled points


def test_rerank_needs_the_vectors_kept_at_build(data, tmp_path):
    plain = make_index("hnsw", DIM, storage="sq8")
    plain.build(data["vectors"])
    with pytest.raises(InputError, match="built without rerank, so it kept no float vectors"):
        plain.set_search_params(rerank=4)
    assert plain.params["rerank"] is None  # the refused value did not stay behind
    plain.save(tmp_path / "plain")
    assert load_index(tmp_path / "plain").params["rerank"] is None
    with pytest.raises(InputError, match="rerank: expected a positive int"):
        plain.set_search_params(rerank=0)
    assert plain.params["rerank"] is None
    kept = make_index("ivf", DIM, pq_m=8, rerank=2)
    vectors = data["vectors"].copy()
    kept.build(vectors)
    vectors[:] = 0  # the caller's buffer is not the index's
    assert not np.shares_memory(kept._exact, vectors)
    kept.set_search_params(rerank=None)  # off, then on again after a save and load
    kept.save(tmp_path / "kept")
    again = load_index(tmp_path / "kept")
    again.set_search_params(rerank=4)
    _, ids = again.search(data["queries"], 10)
    assert recall_at_k_vs_exact(ids, data["exact_ids"]) > 0.9
    sharded = make_index("sharded", DIM, base="ivf", shards=2)
    with pytest.raises(InputError, match="rerank is not supported across shards"):
        sharded.set_search_params(rerank=2)
    assert "rerank" not in sharded.params["base_params"]


def test_scann_folders_from_before_spilling_load_without_it(data, tmp_path):
    index = _make("scann")
    index.build(data["vectors"])
    index.save(tmp_path / "new")
    meta = json.loads((tmp_path / "new" / "backend.json").read_text())
    del meta["params"]["soar_lambda"]
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    (tmp_path / "old" / "backend.json").write_text(json.dumps(meta))
    assert load_index(tmp_path / "old").params["soar_lambda"] is None
    assert load_index(tmp_path / "new").params["soar_lambda"] == 1.5
