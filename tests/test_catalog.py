"""tag-catalog: both engines write the same Parquet, equal to Tagger.predict; clear errors."""

import json
import os
import re
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import build_tiny
from synthetic import make_items, write_jsonl
from typer.testing import CliRunner

from metricls import Tagger
from metricls.catalog import SUMMARY, TagOptions, read_tags, tag_catalog
from metricls.cli import app
from metricls.errors import InputError

N_CATALOG = 20_000
OPTIONS = TagOptions(k=10, batch_size=4096, embeddings=True, num_actors=2)


def raises(message: str):
    return pytest.raises(InputError, match=re.escape(message))


@pytest.fixture(scope="module")
def catalog_items() -> list[dict]:
    """20,000 generated items in the tiny tagger's columns (id, text), without labels."""
    items = make_items(n_items=N_CATALOG, seed=1)
    return [{"id": item["id"], "text": item["text"], "vec": item["vec"]} for item in items]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, catalog_items):
    return write_jsonl(tmp_path_factory.mktemp("catalog") / "catalog.jsonl", catalog_items)


@pytest.fixture(scope="module")
def local_out(tmp_path_factory, tiny_tagger_dir, catalog):
    out = tmp_path_factory.mktemp("tagged") / "local"
    summary = tag_catalog(tiny_tagger_dir, catalog, out, options=OPTIONS)
    return out, summary


def assert_same_output(got: pa.Table, expected: pa.Table) -> None:
    assert got.schema == expected.schema
    for name in ("row", "id", "labels"):
        assert got.column(name).equals(expected.column(name)), name
    for name in ("scores", "embedding"):
        a, b = (t.column(name).combine_chunks().flatten().to_numpy() for t in (got, expected))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)


def test_local_engine_tags_every_item_in_input_order(local_out, tiny_tagger_dir,
                                                      catalog_items):
    out, summary = local_out
    table = pq.read_table(out)  # the folder as any Parquet reader sees it: input order
    assert table.column("row").to_pylist() == list(range(N_CATALOG))
    assert table.column("id").to_pylist() == [item["id"] for item in catalog_items]
    assert table.schema.field("labels").type == pa.list_(pa.string())
    assert table.schema.field("scores").type == pa.list_(pa.float32())
    tagger = Tagger.load(tiny_tagger_dir)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), tagger.model.out_dim)
    assert summary["rows"] == N_CATALOG and summary["engine"] == "local"
    assert json.loads((out / SUMMARY).read_text())["rows"] == N_CATALOG
    # a sample equals what the tagger gives for the same texts
    sample = np.random.default_rng(0).choice(N_CATALOG, 300, replace=False)
    texts = [catalog_items[i]["text"] for i in sample]
    expected = tagger.predict(texts, k=OPTIONS.k)
    rows = table.take(pa.array(sample)).to_pylist()
    assert [row["labels"] for row in rows] == [[name for name, _ in tags] for tags in expected]
    got_scores = np.array([row["scores"] for row in rows])
    np.testing.assert_allclose(got_scores, [[s for _, s in tags] for tags in expected], atol=1e-6)
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]), tagger.embed(texts),
                               atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own
def test_threads_write_the_same_output_and_a_failing_block_leaves_nothing(
        local_out, tiny_tagger_dir, catalog, tmp_path, monkeypatch):
    out, _ = local_out
    for threads in (1, 3):
        mine = tmp_path / f"threads-{threads}"
        options = TagOptions(k=10, batch_size=1500, embeddings=True, threads=threads)
        summary = tag_catalog(tiny_tagger_dir, catalog, mine, options=options)
        assert summary["rows"] == N_CATALOG and len(list(mine.glob("part-*.parquet"))) == 14
        assert_same_output(read_tags(mine), read_tags(out))
    import metricls.catalog as module

    calls = []
    real = module.TagBatch.__call__

    def fail_on_the_fifth(self, block):
        calls.append(1)
        if len(calls) == 5:
            raise InputError("a bad block")
        return real(self, block)

    monkeypatch.setattr(module.TagBatch, "__call__", fail_on_the_fifth)
    with raises("a bad block"):
        tag_catalog(tiny_tagger_dir, catalog, tmp_path / "failed",
                    options=TagOptions(batch_size=1000, threads=2))
    assert not (tmp_path / "failed").exists() and len(calls) < 20  # stopped early, no output
    with raises("threads: expected"):
        tag_catalog(tiny_tagger_dir, catalog, tmp_path / "x", options=TagOptions(threads=0))


def test_ray_engine_writes_the_same_output(local_out, tiny_tagger_dir, catalog, tmp_path):
    import ray

    out = tmp_path / "ray"
    summary = tag_catalog(tiny_tagger_dir, catalog, out, engine="ray", options=OPTIONS)
    assert not ray.is_initialized()  # the call started its local cluster, and stopped it
    assert summary["rows"] == N_CATALOG and summary["engine"] == "ray"
    assert pq.read_table(out).column("row").to_pylist() == list(range(N_CATALOG))
    assert_same_output(read_tags(out), read_tags(local_out[0]))


def test_a_bad_row_met_on_ray_is_one_clear_error(tiny_tagger_dir, catalog_items, tmp_path):
    rows = [{"id": item["id"], "text": item["text"]} for item in catalog_items[:2500]]
    rows[2200]["text"] = 5  # past the first block, which is checked before Ray starts
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    with raises(f"{data}:2201: field 'text' must be a string, got int 5"):
        tag_catalog(tiny_tagger_dir, data, tmp_path / "out", engine="ray",
                    options=TagOptions(batch_size=1000, num_actors=1))
    assert sorted(p for p in os.listdir(tmp_path) if not p.endswith(".lock")) == ["bad.jsonl"]


def test_csv_and_parquet_catalogs_give_the_jsonl_output(tiny_tagger_dir, catalog_items,
                                                         tmp_path):
    df = pd.DataFrame(catalog_items[:3000])[["id", "text"]]
    jsonl = write_jsonl(tmp_path / "c.jsonl", df.to_dict("records"))
    df.to_csv(tmp_path / "c.csv", index=False)
    df.to_parquet(tmp_path / "c.parquet", row_group_size=700)
    outputs = []
    for path in (jsonl, tmp_path / "c.csv", tmp_path / "c.parquet"):
        out = tmp_path / f"out-{path.suffix}"
        tag_catalog(tiny_tagger_dir, path, out, options=TagOptions(k=3, batch_size=1000))
        outputs.append(read_tags(out))
    assert outputs[0].num_rows == 3000
    assert outputs[1].equals(outputs[0]) and outputs[2].equals(outputs[0])


def test_features_backbone_reads_the_vector_column(tmp_path, synthetic_path, catalog_items):
    folder = tmp_path / "vectors"
    tagger = build_tiny(folder, synthetic_path, "encoder.backbones=[features]",
                        "data.vector_column=vec", "data.text_columns=[]", "train.epochs=1")
    data = write_jsonl(tmp_path / "vec.jsonl", catalog_items[:500])
    tag_catalog(folder, data, tmp_path / "out", options=TagOptions(k=3))
    table = read_tags(tmp_path / "out")
    vectors = np.array([item["vec"] for item in catalog_items[:500]], np.float32)
    expected = tagger.predict(vectors, k=3)
    assert table.column("labels").to_pylist() == [[n for n, _ in tags] for tags in expected]


def test_catalog_errors_name_the_file_row_and_fix(tiny_tagger_dir, catalog_items, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", catalog_items[:50])
    with raises(f"{tmp_path / 'missing.jsonl'}: no such file"):
        tag_catalog(tiny_tagger_dir, tmp_path / "missing.jsonl", tmp_path / "o1")
    renamed = write_jsonl(tmp_path / "renamed.jsonl",
                          [{"id": item["id"], "body": item["text"]} for item in catalog_items[:5]])
    with raises(f"{renamed}: no column 'text' (available: 'id', 'body')"):
        tag_catalog(tiny_tagger_dir, renamed, tmp_path / "o2")
    late = [{"id": item["id"], "text": item["text"]} for item in catalog_items[:30]]
    late[25]["id"] = late[3]["id"]  # a repeat in a later block is still found
    late_path = write_jsonl(tmp_path / "late.jsonl", late)
    with raises(f"{late_path}:26: field 'id' repeats id {late[3]['id']!r} (first on line 4)"):
        tag_catalog(tiny_tagger_dir, late_path, tmp_path / "o3", options=TagOptions(batch_size=10))
    blank = pd.DataFrame([*late[:12], {"id": "blank", "text": " "}])
    blank.to_csv(tmp_path / "late.csv", index=False)
    with raises(f"{tmp_path / 'late.csv'}: row 13: empty text"):  # row of the file, not block
        tag_catalog(tiny_tagger_dir, tmp_path / "late.csv", tmp_path / "o4",
                    options=TagOptions(batch_size=5))
    assert not [p for p in os.listdir(tmp_path)  # no leftovers but the writers' lock files
                if p.startswith((".o", "o")) and not p.endswith(".lock")]
    tag_catalog(tiny_tagger_dir, good, tmp_path / "done")
    with raises(f"{tmp_path / 'done'}: already holds a catalog; pass --overwrite to replace it"):
        tag_catalog(tiny_tagger_dir, good, tmp_path / "done")
    assert tag_catalog(tiny_tagger_dir, good, tmp_path / "done", overwrite=True)["rows"] == 50
    with raises("engine: expected one of ['local', 'ray'], got 'spark'"):
        tag_catalog(tiny_tagger_dir, good, tmp_path / "o5", engine="spark")
    with raises("batch_size: expected a positive int, got int 0"):
        tag_catalog(tiny_tagger_dir, good, tmp_path / "o6", options=TagOptions(batch_size=0))
    with raises("threshold: expected None, a number or 'tuned'"):
        tag_catalog(tiny_tagger_dir, good, tmp_path / "o7", options=TagOptions(threshold="x"))


def test_ray_missing_is_a_clear_error(tiny_tagger_dir, catalog, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with raises("--engine ray needs Ray Data: pip install 'metricls[ray]'"):
        tag_catalog(tiny_tagger_dir, catalog, tmp_path / "out", engine="ray")


def test_cli_tag_catalog(tiny_tagger_dir, catalog_items, tmp_path):
    data = write_jsonl(tmp_path / "small.jsonl", catalog_items[:200])
    out = tmp_path / "tags"
    args = ["tag-catalog", str(tiny_tagger_dir), "--data", str(data), "--out", str(out),
            "--k", "3", "--threshold", "tuned"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"tagged: 200 items -> {out}")
    expected = Tagger.load(tiny_tagger_dir).predict([i["text"] for i in catalog_items[:200]],
                                                    k=3, threshold="tuned")
    assert read_tags(out).column("labels").to_pylist() == [[n for n, _ in t] for t in expected]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert f"error: {out}: already holds a catalog; pass --overwrite" in res.output
    res = CliRunner().invoke(app, [*args, "--overwrite", "--threshold", "abc"])
    assert res.exit_code == 2 and "error: --threshold: expected a number or 'tuned'" in res.output


def test_lone_surrogates_are_refused_by_predict_and_tag_catalog_alike(tiny_tagger_dir, tmp_path):
    rows = [{"id": f"i{n}", "text": f"w0x1 w{n}x2"} for n in range(12)]
    bad_text = rows[9]["text"] = "w0x1 \ud800 w1x2"  # json.dumps writes it as a \ud800 escape
    path = write_jsonl(tmp_path / "surrogates.jsonl", rows)
    message = "is not valid Unicode (lone surrogate '\\ud800' at character 5)"
    with raises(f"{path}:10: field 'text' {message}"):
        tag_catalog(tiny_tagger_dir, path, tmp_path / "out", options=TagOptions(batch_size=4))
    assert not [p for p in os.listdir(tmp_path) if "out" in p and not p.endswith(".lock")]
    with raises(f"inputs[1]: the text {message}"):
        Tagger.load(tiny_tagger_dir).predict(["w0x1", bad_text])
    res = CliRunner().invoke(app, ["tag-catalog", str(tiny_tagger_dir), "--data", str(path),
                                   "--out", str(tmp_path / "out"), "--batch-size", "4"])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert res.output.startswith(f"error: {path}:10: field 'text' is not valid Unicode")
