"""ShardedIndex: the same results as one index, one folder per shard, and `index.shards` builds."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from metricls import Tagger, build_index
from metricls.ann import load_index, make_index, recall_at_k_vs_exact, tune_index
from metricls.ann.sharded import shard_folder
from metricls.artifacts import read_json
from metricls.errors import ArtifactError, ConfigError, InputError

DIM = 16


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """1,500 unit vectors around 30 centres, and 200 perturbed copies as queries."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, DIM))
    x = centres[rng.integers(0, 30, 1500)] + 0.3 * rng.normal(size=(1500, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[:200] + 0.05 * rng.normal(size=(200, DIM)).astype(np.float32)
    return {"vectors": x, "queries": (q / np.linalg.norm(q, axis=1, keepdims=True))}


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_flat_equals_one_flat_index(data, shards):
    flat = make_index("flat", DIM)
    flat.build(data["vectors"])
    sharded = make_index("sharded", DIM, base="flat", shards=shards)
    sharded.build(data["vectors"])
    assert sharded.ntotal == 1500 and len(sharded.parts) == shards
    assert sum(part.ntotal for part in sharded.parts) == 1500
    for k in (1, 10, 1500, 1600):  # 1600 > ntotal: padded alike
        expected, got = flat.search(data["queries"], k), sharded.search(data["queries"], k)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    np.testing.assert_array_equal(sharded.reconstruct(), data["vectors"])
    assert sharded.memory_bytes() == flat.memory_bytes()


@pytest.mark.parametrize("base", ["hnsw", "ivf"])
def test_sharded_approximate_backends_tune_to_target(data, base):
    sharded = make_index("sharded", DIM, base=base, shards=3)
    sharded.build(data["vectors"])
    result = tune_index(sharded, data["queries"], k=10, target_recall=0.99,
                        vectors=data["vectors"])
    assert result["recall@k"] >= 0.99 and result["params"]
    for part in sharded.parts:  # the chosen setting reached every shard
        assert all(part.params[name] == v for name, v in result["params"].items())
    exact = make_index("flat", DIM)
    exact.build(data["vectors"])
    truth = exact.search(data["queries"], 10)[1]
    assert recall_at_k_vs_exact(sharded.search(data["queries"], 10)[1], truth) >= 0.99


def test_each_shard_is_its_own_loadable_folder(data, tmp_path):
    sharded = make_index("sharded", DIM, base="ivf", shards=3, base_params={"nprobe": 4})
    sharded.build(data["vectors"])
    sharded.save(tmp_path / "index")
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "index", moved)
    meta = json.loads((moved / "backend.json").read_text())
    assert meta["backend"] == "sharded" and meta["shard_sizes"] == [500, 500, 500]
    offset = 0
    for i in range(3):
        shard = load_index(shard_folder(moved, i))  # a shard alone: rows offset.. of the whole
        assert (shard_folder(moved, i) / "faiss.index").is_file() and shard.backend == "ivf"
        assert shard.params["nprobe"] == 4
        rows = data["vectors"][offset:offset + shard.ntotal]
        np.testing.assert_array_equal(shard.search(rows, 1)[1][:, 0], np.arange(len(rows)))
        offset += shard.ntotal
    loaded = load_index(moved)
    for got, expected in zip(loaded.search(data["queries"], 10),
                             sharded.search(data["queries"], 10)):
        np.testing.assert_array_equal(got, expected)
    new = data["vectors"][:5] * -1.0  # far from everything else: their own nearest
    np.testing.assert_array_equal(loaded.add(new), np.arange(1500, 1505))
    loaded.set_search_params(nprobe=loaded.search_param_grid(1)[-1]["nprobe"])
    np.testing.assert_array_equal(loaded.search(new, 1)[1][:, 0], np.arange(1500, 1505))
    loaded.save(tmp_path / "grown")
    assert read_json(tmp_path / "grown" / "backend.json")["shard_sizes"] == [500, 500, 505]


def test_bad_parameters_and_damaged_folders(data, tmp_path):
    with pytest.raises(InputError, match=r"base: expected one of \['flat', 'hnsw', 'ivf'\], "
                                         r"got 'scann'"):
        make_index("sharded", DIM, base="scann")
    with pytest.raises(InputError, match="shards: expected a positive int, got int 0"):
        make_index("sharded", DIM, shards=0)
    with pytest.raises(InputError, match=r"unknown parameter\(s\) \['efsearch'\]"):
        make_index("sharded", DIM, base="hnsw", base_params={"efsearch": 4})
    with pytest.raises(InputError, match="needs at least 4 vectors, got 3"):
        make_index("sharded", DIM, shards=4).build(data["vectors"][:3])
    sharded = make_index("sharded", DIM, base="hnsw", shards=2)
    with pytest.raises(InputError, match=r"\['nprobe'\] are not search parameters of 'hnsw'"):
        sharded.set_search_params(nprobe=3)
    sharded.build(data["vectors"])
    sharded.save(tmp_path / "index")
    meta_path = tmp_path / "index" / "backend.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "shard_sizes": [750, 751]}))
    with pytest.raises(ArtifactError, match=r"shard_sizes .* do not match the shard folders"):
        load_index(tmp_path / "index")
    meta_path.write_text(json.dumps(meta))
    shutil.rmtree(shard_folder(tmp_path / "index", 1))
    with pytest.raises(ArtifactError, match=re.escape("shard-001/backend.json: missing")):
        load_index(tmp_path / "index")


def test_index_shards_config_builds_a_sharded_tagger(tiny_tagger_dir, tiny_tagger_copy):
    texts = ["w1x0 w1x2 noise3", "w4x1 w7x3 w7x0 noise1"]
    expected = Tagger.load(tiny_tagger_dir).predict_scores(texts, k=5)
    config = read_json(tiny_tagger_copy / "config.json")
    (tiny_tagger_copy / "config.json").write_text(json.dumps(
        config | {"index": config["index"] | {"shards": 3}}))  # build-index reads the config
    tagger = build_index(tiny_tagger_copy)
    assert tagger.state.item_index.backend == "sharded" and len(tagger.state.item_index.parts) == 3
    got = tagger.predict_scores(texts, k=5)  # tiny's flat backend: sharding changes nothing
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    files = read_json(tiny_tagger_copy / "manifest.json")["files"]
    assert {"ann/items/shard-000/faiss.index", "ann/items/shard-002/faiss.index"} <= set(files)
    config["index"].update(shards=2, backend="scann")
    (tiny_tagger_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=re.escape("index.shards=2 needs a FAISS backend")):
        build_index(tiny_tagger_copy)


def test_index_pq_m_compresses_the_large_ivf_indexes(tiny_tagger_dir, tiny_tagger_copy,
                                                     monkeypatch):
    from metricls import build as build_module

    config = read_json(tiny_tagger_copy / "config.json")
    n_items = Tagger.load(tiny_tagger_dir).state.item_index.ntotal
    n_labels = len(Tagger.load(tiny_tagger_dir).vocab)
    assert n_labels < 256 <= n_items  # items get compressed, prototypes stay IVF-flat
    monkeypatch.setattr(build_module, "PQ_MIN_VECTORS", 256)
    for bad, message in (({"backend": "hnsw", "pq_m": 4}, "compresses ivf indexes only"),
                         ({"backend": "ivf", "pq_m": 5}, "must divide the embedding dimension")):
        (tiny_tagger_copy / "config.json").write_text(json.dumps(
            config | {"index": config["index"] | bad}))
        with pytest.raises(ConfigError, match=re.escape(f"index.pq_m={bad['pq_m']}")) as err:
            build_index(tiny_tagger_copy)
        assert message in str(err.value)
    (tiny_tagger_copy / "config.json").write_text(json.dumps(
        config | {"index": config["index"] | {"backend": "ivf", "pq_m": 4}}))
    tagger = build_index(tiny_tagger_copy)
    assert type(tagger.state.item_index._index).__name__ == "IndexIVFPQ"
    assert type(tagger.state.proto_index._index).__name__ == "IndexIVFFlat"
    ann = read_json(tiny_tagger_copy / "manifest.json")["build"]["ann"]
    assert ann["items"]["pq_m"] == 4 and "pq_m" not in ann["prototypes"]
    reloaded = Tagger.load(tiny_tagger_copy)
    assert reloaded.state.item_index._index.code_size == 4  # bytes a vector, not 32 x 4
    texts = ["w1x0 w1x2 noise3", "w4x1 w7x3 w7x0 noise1"]
    np.testing.assert_array_equal(reloaded.predict_scores(texts, k=3)[1],
                                  tagger.predict_scores(texts, k=3)[1])
