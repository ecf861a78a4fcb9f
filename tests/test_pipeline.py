"""End to end on generated data: train, build, load, predict, evaluate, CLI."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from typer.testing import CliRunner

from metricls import Tagger, build_index, load_config, train_embedder
from metricls.cli import app
from metricls.data.dataset import Dataset, read_config_items
from metricls.errors import ArtifactError, InputError, NotFittedError
from metricls.evaluation import evaluate
from metricls.runner import evaluate_folder, run_pipeline


def test_tiny_tagger_learns_the_labels(tiny_tagger_dir):
    tagger = Tagger.load(tiny_tagger_dir)
    items = read_config_items(tagger.config.data).subset("test")
    report = evaluate(tagger, items)
    # each label owns 4 words, so a working tagger is far above chance (1 / 20 labels)
    assert report["P@1"] > 0.8 and report["R@5"] > 0.8
    assert report["n_items"] == len(items)
    assert set(report["timings"]) >= {"embed_s", "search_score_s", "total_s", "items_per_s"}


def test_predict_contract(tiny_tagger_dir):
    tagger = Tagger.load(tiny_tagger_dir)
    text = "w0x1 w0x2 noise3"
    out = tagger.predict([text, "w5x0 w5x3"], k=3)
    assert len(out) == 2 and all(len(row) == 3 for row in out)
    assert out[0][0][0] == "facet0::tag0" and out[1][0][0] == "facet2::tag5"
    scores = [s for _, s in out[0]]
    assert scores == sorted(scores, reverse=True)
    assert tagger.predict([], k=3) == []
    s, ids = tagger.predict_scores([text], k=4)
    assert s.shape == ids.shape == (1, 4) and s.dtype == np.float32 and ids.dtype == np.int64
    emb = tagger.embed([text])
    assert emb.shape == (1, tagger.model.out_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    tuned = tagger.predict([text], k=10, threshold="tuned")
    assert 1 <= len(tuned[0]) <= 10
    assert tagger.predict([text], k=10, threshold=2.0) == [[]]


@pytest.mark.parametrize("bad, message", [
    ("just a string", "pass a list of texts, e.g. predict([text])"),
    (["fine", ""], "inputs"),
    ([1, 2], "inputs"),
])
def test_predict_rejects_bad_inputs(tiny_tagger_dir, bad, message):
    tagger = Tagger.load(tiny_tagger_dir)
    with pytest.raises(InputError, match=re.escape(message)):
        tagger.predict(bad)


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_predict_rejects_bad_k(tiny_tagger_dir, k):
    with pytest.raises(InputError, match="k"):
        Tagger.load(tiny_tagger_dir).predict(["w0x1"], k=k)


def test_saved_and_reloaded_tagger_answers_the_same(tiny_tagger_dir, tiny_tagger_copy, tmp_path):
    a = Tagger.load(tiny_tagger_dir)
    moved = tmp_path / "elsewhere" / "t"
    moved.parent.mkdir()
    tiny_tagger_copy.rename(moved)
    b = Tagger.load(moved)
    texts = ["w3x0 w7x1", "w1x2 noise1"]
    assert a.predict(texts, k=5) == b.predict(texts, k=5)


@pytest.mark.parametrize("backend", ["flat", "hnsw", "ivf", "scann"])
def test_every_backend_builds_loads_and_agrees(tiny_tagger_copy, backend):
    if backend == "scann":
        pytest.importorskip("scann")
    exact = Tagger.load(tiny_tagger_copy)
    texts = ["w3x0 w7x1", "w1x2 noise1", "w10x3 w11x0 w0x0"]
    built = build_index(tiny_tagger_copy, backend=backend)
    assert built.state.proto_index.backend == backend
    reloaded = Tagger.load(tiny_tagger_copy)
    assert [t for t, _ in reloaded.predict(texts, k=1)[0]] == [t for t, _ in
                                                                exact.predict(texts, k=1)[0]]


def test_missing_or_altered_file_is_refused(tiny_tagger_copy):
    (tiny_tagger_copy / "scoring.json").write_text('{"blend": 1.0}')
    with pytest.raises(ArtifactError, match=re.escape("scoring.json")):
        Tagger.load(tiny_tagger_copy)
    (tiny_tagger_copy / "prototypes.safetensors").unlink()
    with pytest.raises(ArtifactError, match=re.escape("prototypes.safetensors")):
        Tagger.load(tiny_tagger_copy)


def test_trained_but_not_built_says_what_to_do(tmp_path, synthetic_path):
    folder = tmp_path / "t"
    train_embedder(load_config(TINY, [f"data.path={synthetic_path}", "train.epochs=1"]),
                   out=folder)
    with pytest.raises(NotFittedError, match=re.escape("build-index")):
        Tagger.load(folder)


def test_evaluate_counts_unknown_labels_as_misses(tiny_tagger_dir, tmp_path):
    source = Tagger.load(tiny_tagger_dir).config.data.path
    items = [json.loads(line) for line in Path(source).read_text().splitlines()][:50]
    for item in items:
        item["labels"] = item["labels"] + ["brand::new"]
    path = tmp_path / "new.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    reports = evaluate_folder(tiny_tagger_dir, data=str(path), split="all",
                              out=tmp_path / "r.json")
    rep = reports["metricls"]
    assert rep["n_unknown_labels"] == 1 and rep["n_unknown_assignments"] == 50
    assert rep["R@10"] < 1.0  # the unknown label can never be recalled
    assert json.loads((tmp_path / "r.json").read_text())["metricls"]["n_items"] == 50


def test_cli_predict_evaluate_verify(tiny_tagger_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(tiny_tagger_dir), "w0x1 w0x2", "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["tags"][0][0] == "facet0::tag0"
    res = runner.invoke(app, ["evaluate", str(tiny_tagger_dir), "--split", "test",
                              "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert "P@1" in res.output and (tmp_path / "e.json").exists()
    res = runner.invoke(app, ["verify", str(tiny_tagger_dir)])
    assert res.exit_code == 0 and "ok" in res.output


def test_cli_errors_are_one_line(tiny_tagger_copy, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(tmp_path / "nope"), "text"])
    assert res.exit_code != 0 and res.output.count("error:") == 1
    res = runner.invoke(app, ["train", str(TINY), "--set", "train.epochz=3"])
    assert res.exit_code == 2 and "did you mean 'train.epochs'" in res.output
    res = runner.invoke(app, ["evaluate", str(tiny_tagger_copy), "--split", "nope"])
    assert res.exit_code == 2 and "--split" in res.output
    (tiny_tagger_copy / "labels.json").write_text("{}")
    res = runner.invoke(app, ["verify", str(tiny_tagger_copy)])
    assert res.exit_code == 1 and "labels.json" in res.output


def test_auto_backend_is_exact_below_the_threshold(tiny_tagger_copy):
    from metricls.ann import choose_backend
    from metricls.artifacts import read_json

    assert choose_backend("auto", 10, 20_000) == "flat"
    assert choose_backend("auto", 20_000, 20_000) == "hnsw"
    assert choose_backend("scann", 10, 20_000) == "scann"
    tagger = build_index(tiny_tagger_copy, backend="auto")
    assert tagger.state.proto_index.backend == tagger.state.item_index.backend == "flat"
    ann = read_json(tiny_tagger_copy / "manifest.json")["build"]["ann"]
    assert ann == {"prototypes": {"backend": "flat"}, "items": {"backend": "flat"}}
    hnsw = build_index(tiny_tagger_copy, backend="hnsw")
    ann = read_json(tiny_tagger_copy / "manifest.json")["build"]["ann"]
    assert hnsw.state.proto_index.backend == "hnsw" and ann["prototypes"]["recall@k"] >= 0.99
    assert "ef_search" in ann["prototypes"]["params"]


@pytest.mark.parametrize(("args", "named"), [
    (["--baseline", "bogus"], "--baseline"),
    (["--show", "-1"], "--show"),
    (["--set", "train.epochz=1"], "train.epochz"),
])
def test_cli_run_checks_its_arguments_before_training(tmp_path, synthetic_path, args, named):
    out = tmp_path / "tagger"
    started = time.perf_counter()
    res = CliRunner().invoke(app, ["-q", "run", str(TINY), "--set", f"data.path={synthetic_path}",
                                   "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert res.output.count("error:") == 1 and named in res.output
    assert not out.exists() and not (tmp_path / "tagger-evaluation.json").exists()
    assert time.perf_counter() - started < 3  # refused at once, not after training


def _relabelled(tiny_tagger_dir, path, labels_of):
    source = Tagger.load(tiny_tagger_dir).config.data.path
    items = [json.loads(line) for line in Path(source).read_text().splitlines()][:40]
    for i, item in enumerate(items):
        item["labels"] = labels_of(i, item["labels"])
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def test_evaluate_refuses_items_without_labels(tiny_tagger_dir, tmp_path):
    path = _relabelled(tiny_tagger_dir, tmp_path / "unlabelled.jsonl", lambda i, labels: [])
    res = CliRunner().invoke(app, ["evaluate", str(tiny_tagger_dir), "--data", str(path)])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == (f"error: {path}: no item has labels; evaluate needs labelled "
                                  "items (column 'labels')")


def test_evaluate_warns_when_some_items_lack_labels(tiny_tagger_dir, tmp_path, caplog):
    path = _relabelled(tiny_tagger_dir, tmp_path / "some.jsonl",
                       lambda i, labels: labels if i % 2 else [])
    reports = evaluate_folder(tiny_tagger_dir, data=str(path))
    assert reports["metricls"]["n_items"] == 40
    assert "20 of 40 items have no labels (column 'labels')" in caplog.text


def test_build_index_blames_a_bad_backend_on_the_argument(tiny_tagger_copy):
    res = CliRunner().invoke(app, ["build-index", str(tiny_tagger_copy), "--backend", "annoy"])
    assert res.exit_code == 2
    assert res.output.startswith("error: --backend annoy: index.backend = 'annoy' is not one of")
    assert "config.json" not in res.output


@pytest.fixture
def read_counts(monkeypatch):
    """Counts the reads of a data file (every one goes through `read_items` of the dataset
    module: `read_config_items`, `Dataset.load`) and the loads of a tagger folder."""
    import metricls.data.dataset as dataset_module

    counts = {"read": 0, "load": 0}
    read, load = dataset_module.read_items, Tagger.load.__func__

    def counted_read(*args, **kwargs):
        counts["read"] += 1
        return read(*args, **kwargs)

    def counted_load(cls, *args, **kwargs):
        counts["load"] += 1
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "read_items", counted_read)
    monkeypatch.setattr(Tagger, "load", classmethod(counted_load))
    return counts


def test_run_reads_the_data_once_and_loads_the_tagger_once(tmp_path, synthetic_path,
                                                           read_counts):
    result = run_pipeline(TINY, overrides=[f"data.path={synthetic_path}"], out=tmp_path / "t",
                          baseline="untrained", show=3)
    assert read_counts["read"] == 1, f"the data file was read {read_counts['read']} times"
    assert read_counts["load"] <= 1, f"the tagger was loaded {read_counts['load']} times"
    assert set(result["reports"]) == {"metricls", "baseline:untrained"}
    assert result["reports"]["metricls"]["split"] == "test" and len(result["examples"]) == 3
    assert json.loads(Path(result["json"]).read_text())["metricls"]["n_items"] == \
        result["reports"]["metricls"]["n_items"]


def test_run_refuses_its_output_before_reading_the_data(tmp_path, synthetic_path, read_counts):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a metricls tagger folder"):
        run_pipeline(TINY, overrides=[f"data.path={synthetic_path}"], out=out)
    assert read_counts == {"read": 0, "load": 0}


def test_evaluate_folder_with_a_loaded_tagger_and_dataset_reports_the_same(tiny_tagger_dir):
    tagger = Tagger.load(tiny_tagger_dir)
    dataset = Dataset.load(tagger.config.data)
    given = evaluate_folder(tiny_tagger_dir, split="test", tagger=tagger, dataset=dataset)
    read = evaluate_folder(tiny_tagger_dir, split="test")
    assert _untimed(given) == _untimed(read)
    with pytest.raises(InputError, match="pass dataset only with split"):
        evaluate_folder(tiny_tagger_dir, split="all", dataset=dataset)


def _untimed(reports: dict) -> dict:
    return {k: v for k, v in reports["metricls"].items() if k != "timings"}
