"""Data beyond memory: features_path (a memory-mapped .npy read lazily) and build-time embeddings
in memory-mapped files give the same taggers as in-memory arrays."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import entries
from synthetic import make_items, write_jsonl

from metricls import Tagger, build_index, load_config, train_embedder
from metricls.artifacts import write_npy
from metricls.data.dataset import Dataset
from metricls.data.features import FeatureRows
from metricls.data.items import read_items
from metricls.errors import InputError


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The synthetic items as JSONL (with their vectors) and their vectors alone as a .npy."""
    folder = tmp_path_factory.mktemp("features")
    items = make_items(n_items=400, n_labels=12, dim=6, seed=5)
    vectors = np.array([item["vec"] for item in items], dtype=np.float32)
    np.save(folder / "features.npy", vectors)
    return {"table": write_jsonl(folder / "items.jsonl", items), "npy": folder / "features.npy",
            "vectors": vectors, "folder": folder}


def _raises(message: str):
    return pytest.raises(InputError, match=re.escape(message))


def test_features_path_is_memory_mapped_and_subsets_stay_lazy(files):
    items = read_items(files["table"], features_path=files["npy"])
    assert isinstance(items.features, FeatureRows) and items.features.shape == (400, 6)
    assert isinstance(items.features.base, np.memmap)
    train = items.subset("train")
    assert isinstance(train.features, FeatureRows) and train.features.base is items.features.base
    rows = np.flatnonzero(items.split == "train")
    np.testing.assert_array_equal(train.features[:], files["vectors"][rows])
    picked = train.subset(np.array([3, -1, 0]))
    np.testing.assert_array_equal(picked.features[np.arange(3)],
                                  files["vectors"][rows[[3, -1, 0]]])
    assert picked.features[1:2].dtype == np.float32
    np.testing.assert_array_equal(np.asarray(picked.features), picked.features[:])
    with _raises("features: row index out of range for 3 rows"):
        picked.features.take([3])


def test_dataset_summary_has_the_features_hash(files):
    cfg = load_config(None, [f"data.path={files['table']}", "data.id_column=id",
                             "data.text_columns=[]", f"data.features_path={files['npy']}"])
    summary = Dataset.load(cfg.data).summary()
    assert len(summary["features_sha256"]) == 64 and summary["n_train"] > 300


def test_features_path_is_read_with_a_packaged_dataset_name(tmp_path):
    """`data.path: debtags` (a name, not a file path) still reads its `features_path`."""
    n = len(read_items("debtags", id_column="package", text_columns=["summary"]))
    vectors = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    np.save(tmp_path / "debtags.npy", vectors)
    cfg = load_config("configs/debtags.yaml", [f"data.features_path={tmp_path / 'debtags.npy'}"])
    data = Dataset.load(cfg.data)
    assert data.train.features is not None and data.train.features.shape == (len(data.train), 2)
    assert data.features_sha256 is not None


def test_bad_features_files_name_the_file_and_row(files, tmp_path):
    table, n = files["table"], len(files["vectors"])
    with _raises(f"{tmp_path / 'none.npy'}: no such features file"):
        read_items(table, features_path=tmp_path / "none.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with _raises(f"{tmp_path / 'text.npy'}: not a readable .npy array"):
        read_items(table, features_path=tmp_path / "text.npy")
    np.save(tmp_path / "short.npy", files["vectors"][:-1])
    with _raises(f"expected a 2-D float array with one row per item ({n} rows, in the order of "
                 f"the table), got shape ({n - 1}, 6) dtype float32"):
        read_items(table, features_path=tmp_path / "short.npy")
    np.save(tmp_path / "ints.npy", files["vectors"].astype(np.int32))
    with _raises("got shape (400, 6) dtype int32"):
        read_items(table, features_path=tmp_path / "ints.npy")
    bad = files["vectors"].astype(np.float64)
    bad[123, 4] = np.nan
    bad[300, 0] = 1e300  # beyond float32: also refused, but row 123 comes first
    np.save(tmp_path / "nan.npy", bad)
    with _raises(f"{tmp_path / 'nan.npy'}: row 123 (item 'item123') has a non-finite value "
                 f"nan at column 4"):
        read_items(table, features_path=tmp_path / "nan.npy")
    with _raises("read_items: pass features_path or feature_columns/vector_column, not both"):
        read_items(table, vector_column="vec", features_path=files["npy"])


def test_training_on_features_path_equals_training_on_the_vector_column(files, tmp_path):
    """The lazy memory-mapped path gives the very same tagger as the in-memory column."""
    common = [f"data.path={files['table']}", "data.id_column=id", "data.text_columns=[]",
              "encoder.backbones=[features]", "encoder.head.hidden_dim=32",
              "encoder.head.out_dim=16", "train.epochs=1", "train.batch_size=64",
              "train.labels_per_batch=8", "index.backend=flat"]
    taggers = {}
    for name, extra in (("column", "data.vector_column=vec"),
                        ("npy", f"data.features_path={files['npy']}")):
        folder = train_embedder(load_config(None, [*common, extra]), out=tmp_path / name)
        taggers[name] = build_index(folder)
    queries = files["vectors"][:50]
    column, npy = (taggers[n].predict_scores(queries, k=5) for n in ("column", "npy"))
    np.testing.assert_array_equal(npy[1], column[1])
    np.testing.assert_allclose(npy[0], column[0], atol=1e-6)
    manifest = json.loads((tmp_path / "npy" / "manifest.json").read_text())
    assert "features_sha256" in manifest["data"]
    assert Tagger.load(tmp_path / "npy").predict(queries[:2], k=3)[0]


def test_build_with_memory_mapped_embeddings_gives_the_same_tagger(
        tiny_tagger_dir, tiny_tagger_copy, monkeypatch):
    import metricls.build as build

    written = []

    def spy(path, *args, **kwargs):
        written.append(path)
        return write_npy(path, *args, **kwargs)

    monkeypatch.setattr(build, "MEMMAP_BYTES", 0)  # every split goes through a .npy
    monkeypatch.setattr(build, "write_npy", spy)
    tagger = build_index(tiny_tagger_copy)
    assert [p.name for p in written] == ["train.npy", "valid.npy"]
    assert not any(p.exists() for p in written)  # the scratch folder is gone
    assert entries(tiny_tagger_copy.parent) == ["tagger"]
    texts = ["w1x0 w1x2 noise3", "w4x1 w7x3 w7x0 noise1", "noise2 w12x1"]
    expected = Tagger.load(tiny_tagger_dir).predict_scores(texts, k=5)
    got = tagger.predict_scores(texts, k=5)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)


def test_write_npy_is_atomic(tmp_path):
    def fill(out):
        out[:2] = 1.0
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_npy(tmp_path / "x.npy", (4, 3), np.float32, fill)
    assert list(tmp_path.iterdir()) == []
    done = write_npy(tmp_path / "x.npy", (4, 3), np.float32, lambda out: out.fill(2.0))
    assert isinstance(done, np.memmap) and done.shape == (4, 3) and (done == 2).all()
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.full((4, 3), 2, np.float32))
