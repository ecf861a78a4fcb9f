"""Training stops with one clear line when it diverges, and never saves non-finite weights."""

import pytest
from conftest import TINY
from typer.testing import CliRunner

from metricls import load_config, train_embedder
from metricls.cli import app
from metricls.errors import ConfigError


def test_diverged_training_fails_and_writes_nothing(tmp_path, synthetic_path):
    out = tmp_path / "tagger"
    result = CliRunner().invoke(app, ["-q", "train", str(TINY), "--set",
                                      f"data.path={synthetic_path}", "--set", "loss.alpha=1e308",
                                      "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: training diverged at epoch 1, step 1: loss is nan")
    assert "loss.alpha (1e+308)" in lines[0] and "train.lr" in lines[0]
    assert not out.exists()


def test_diverged_training_leaves_an_existing_folder_as_it_was(tiny_tagger_copy,
                                                               synthetic_path):
    before = {p: p.read_bytes() for p in tiny_tagger_copy.rglob("*") if p.is_file()}
    cfg = load_config(TINY, [f"data.path={synthetic_path}", "loss.name=decoupled_softmax",
                             "loss.temperature=1e-300"])
    with pytest.raises(ConfigError, match=r"diverged .* raise loss\.temperature \(1e-300\)"):
        train_embedder(cfg, out=tiny_tagger_copy, overwrite=True)
    assert {p: p.read_bytes() for p in tiny_tagger_copy.rglob("*") if p.is_file()} == before
