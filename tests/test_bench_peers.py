"""The peers benchmark (benchmarks/peers/): one quick run of the script on generated data, its
files, and reusing tagger folders."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks.peers.dense_peers import reusable_tagger
from benchmarks.peers.run import bench_peers, main
from metricls.artifacts import load_tensors, read_json
from metricls.config import load_config
from metricls.data.dataset import Dataset
from metricls.errors import InputError
from metricls.evaluation import REPORT_KEYS, evaluate, ranking_metrics
from metricls.tagger import Tagger

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SCRIPT = ROOT / "benchmarks" / "peers" / "run.py"
CHEAP_PEERS = ["tfidf-ovr", "napkinxc", "knn", "prototypes"]


def _config(folder: Path, synthetic_path: Path, **data: str) -> Path:
    """configs/tiny.yaml on the generated data (plus `data` keys), as a YAML file."""
    raw = yaml.safe_load(TINY.read_text())
    raw["data"].update(path=str(synthetic_path), **data)
    path = folder / f"tiny-{len(data)}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _halfway(data: Dataset) -> dict:
    """Metrics halfway between ranking labels by popularity (what a peer with scrambled label
    columns resembles) and the perfect ranking (each item's own labels first)."""
    popular = np.tile(np.argsort(-data.vocab.counts, kind="stable")[:10], (len(data.test), 1))
    perfect = np.full((len(data.test), 10), -1, dtype=np.int64)
    for i, labels in enumerate(data.test.labels):
        known = [data.vocab.index(name) for name in labels if name in data.vocab][:10]
        perfect[i, :len(known)] = known
    low, high = (ranking_metrics(ids, data.test.labels, data.vocab) for ids in (popular, perfect))
    return {key: (low[key] + high[key]) / 2 for key in REPORT_KEYS}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, synthetic_path):
    """`python benchmarks/peers/run.py --quick` with the cheap peers, from another folder;
    kNN/prototypes on the data's vectors."""
    folder = tmp_path_factory.mktemp("peers")
    config = _config(folder, synthetic_path, vector_column="vec")
    out = folder / "out" / "peers"
    env = {**os.environ, "METRICLS_CACHE": str(folder / "cache")}
    res = subprocess.run([sys.executable, str(SCRIPT), "--quiet", "--configs", str(config),
                          "--peers", ",".join(CHEAP_PEERS), "--out", str(out), "--quick",
                          "--frozen", "features"], capture_output=True, text=True, env=env,
                         cwd=folder)
    assert res.returncode == 0, res.stderr
    return json.loads(out.with_suffix(".json").read_text()), out, config, res.stdout


def test_quick_run_writes_one_row_per_method(quick_run):
    result, out, _, printed = quick_run
    names = [row["name"] for row in result["rows"]]
    assert names == ["metricls:tiny", *CHEAP_PEERS]
    assert result["data"]["quick"] and result["machine"]["cpus"] >= 1
    for row in result["rows"]:
        assert set(REPORT_KEYS) <= set(row["metrics"])
        assert min(row["train_s"], row["featurize_s"]) >= 0 and row["predict_s"] > 0
        assert row["items_per_s"] <= row["items_per_s_from_features"]
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert out.with_suffix(".md").read_text().strip() in printed


def test_metrics_are_those_of_the_saved_ids(quick_run):
    result, out, config, _ = quick_run
    data = Dataset.load(load_config(config).data)  # the generated data is smaller than --quick
    ids, meta = load_tensors(out.with_suffix(".safetensors"))
    assert meta["data_sha256"] == data.sha256 and int(meta["n_test"]) == len(data.test)
    for row in result["rows"]:
        assert ids[row["name"]].shape == (len(data.test), 10)
        expected = ranking_metrics(ids[row["name"]].astype(np.int64), data.test.labels,
                                   data.vocab)
        assert row["metrics"] == pytest.approx(expected)


def test_every_method_is_closer_to_perfect_than_to_popularity(quick_run):
    # the words of a generated text reveal its labels; scrambled label columns (scikit-learn's
    # int8 one-vs-rest trap) would rank like label popularity
    result, _, config, _ = quick_run
    halfway = _halfway(Dataset.load(load_config(config).data))
    for row in result["rows"]:
        for key in ("P@1", "P@5", "PSP@5"):
            assert row["metrics"][key] > halfway[key], (row["name"], key)


def test_settings_are_chosen_on_valid(quick_run):
    result, *_ = quick_run
    for row in result["rows"][1:]:
        settings = row["settings"]
        if row["name"] == "prototypes":  # nothing to choose
            assert "chosen" not in settings
            continue
        scores = [s["valid_score"] for s in settings["grid"]]
        chosen = next(s for s in settings["grid"] if s["valid_score"] == max(scores))
        assert {k: chosen[k] for k in settings["chosen"]} == settings["chosen"]


def test_markdown_bolds_the_best_of_each_column(quick_run):
    result, out, _, _ = quick_run
    lines = [line for line in out.with_suffix(".md").read_text().splitlines()
             if line.startswith("| ") and not line.startswith("| method")]
    assert len(lines) == len(result["rows"])
    cells = [line.strip("| ").split(" | ")[1:] for line in lines]
    for column, key in enumerate(("P@1", "P@3", "P@5")):
        values = [row["metrics"][key] for row in result["rows"]]
        bold = [c[column].startswith("**") for c in cells]
        assert bold == [v == max(values) for v in values], key


def test_reuse_evaluates_a_matching_tagger_folder(tmp_path, synthetic_path, tiny_tagger_dir):
    # the session's tiny tagger was trained from tiny.yaml with only data.path overridden
    config = _config(tmp_path, synthetic_path)
    result = bench_peers([config], peers=[], out=tmp_path / "peers", reuse=True,
                         index_root=tiny_tagger_dir.parent)
    (row,) = result["rows"]
    assert row["settings"]["source"] == str(tiny_tagger_dir)
    assert row["train_s"] == read_json(tiny_tagger_dir / "training.json")["seconds"]
    data = Dataset.load(load_config(config).data)
    direct = evaluate(Tagger.load(tiny_tagger_dir), data.test)
    assert {k: row["metrics"][k] for k in REPORT_KEYS} == {k: direct[k] for k in REPORT_KEYS}


def test_a_tagger_of_another_config_or_data_is_not_reused(tmp_path, synthetic_path,
                                                          tiny_tagger_dir, caplog):
    cfg = load_config(TINY, [f"data.path={synthetic_path}"])
    data = Dataset.load(cfg.data)
    assert reusable_tagger(tiny_tagger_dir, cfg, data) is not None
    other = load_config(TINY, [f"data.path={synthetic_path}", "train.epochs=3"])
    with caplog.at_level(logging.WARNING, logger="benchmarks"):
        assert reusable_tagger(tiny_tagger_dir, other, data) is None
    assert "train.epochs" in caplog.text
    copy = tmp_path / "copy.jsonl"  # the same data elsewhere: reused
    copy.write_text(synthetic_path.read_text())
    moved = load_config(TINY, [f"data.path={copy}"])
    assert reusable_tagger(tiny_tagger_dir, moved, Dataset.load(moved.data)) is not None
    copy.write_text(synthetic_path.read_text().replace('"item0"', '"item0b"'))  # other data
    with caplog.at_level(logging.WARNING, logger="benchmarks"):
        assert reusable_tagger(tiny_tagger_dir, moved, Dataset.load(moved.data)) is None
    assert "other data" in caplog.text


def test_a_tagger_saved_with_a_stale_config_key_is_retrained_not_fatal(
        tmp_path, synthetic_path, tiny_tagger_dir, caplog):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(tiny_tagger_dir, folder)
    saved = read_json(folder / "config.json")
    saved["train"]["gone_key"] = 1  # written by a metricls that had this key
    (folder / "config.json").write_text(json.dumps(saved))
    cfg = load_config(TINY, [f"data.path={synthetic_path}"])
    with caplog.at_level(logging.WARNING, logger="benchmarks"):
        assert reusable_tagger(folder, cfg, Dataset.load(cfg.data)) is None
    assert "its config does not read" in caplog.text and "gone_key" in caplog.text


@pytest.mark.parametrize(("args", "message"), [
    (["--peers", "svm"], "--peers: unknown peer 'svm'"),
    (["--quick", "--reuse"], "--reuse evaluates taggers trained on the full data"),
    (["--frozen", "bert"], "--frozen: expected one of ['minilm', 'features']"),
])
def test_bad_arguments_give_one_error_line(tmp_path, synthetic_path, capsys, args, message):
    config = _config(tmp_path, synthetic_path)
    status = main(["--configs", str(config), "--out", str(tmp_path / "p"), *args])
    printed = capsys.readouterr()
    lines = printed.err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert not printed.out and not list(tmp_path.glob("p.*"))


def test_configs_must_share_their_data_and_differ_in_name(tmp_path, synthetic_path):
    first = _config(tmp_path, synthetic_path)
    other = _config(tmp_path, synthetic_path, vector_column="vec")
    with pytest.raises(InputError, match=re.escape("its data section differs")):
        bench_peers([first, other], peers=[], out=tmp_path / "p")
    with pytest.raises(InputError, match=re.escape("two configs are named 'tiny'")):
        bench_peers([first, first], peers=[], out=tmp_path / "p")


@pytest.mark.slow
def test_pecos_runs_in_its_own_venv(tmp_path, synthetic_path):
    # the benchmark creates (or reuses) .cache/peers-venv with pip: needs PyPI, so it is not in
    # the default run
    config = _config(tmp_path, synthetic_path)
    result = bench_peers([config], peers=["pecos"], out=tmp_path / "p", quick=True,
                         venv=ROOT / ".cache" / "peers-venv")
    halfway = _halfway(Dataset.load(load_config(config).data))
    pecos = result["rows"][1]
    assert pecos["name"] == "pecos" and pecos["settings"]["versions"]["numpy"] < "2"
    assert all(pecos["metrics"][key] > halfway[key] for key in ("P@1", "P@5", "PSP@5"))
