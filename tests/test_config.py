import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
from conftest import entries

from metricls.config import Config, dump_config, from_dict, load_config, to_dict
from metricls.errors import ConfigError


def test_defaults_and_yaml_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {epochs: 3}\nencoder: {backbones: [lexical]}\n")
    cfg = load_config(path, ["train.lr=3e-4", "index.backend=flat"])
    assert cfg.name == "x" and cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(3e-4)
    assert cfg.encoder.backbones == ("lexical",) and cfg.index.backend == "flat"
    assert cfg.train.batch_size == Config().train.batch_size


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config(None, ["encoder.head.out_dim=64", "loss.name=triplet"])
    assert from_dict(to_dict(cfg)) == cfg
    path = tmp_path / "dump.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    ("trian.lr=1", "unknown config key 'trian'; did you mean 'train'?"),
    ("train.epochs=abc", "train.epochs must be an integer, got str 'abc'"),
    ("train.epochs=true", "train.epochs must be an integer, got bool True"),
    ("encoder.head.out_dim=1.5", "encoder.head.out_dim must be an integer, got float 1.5"),
    ("loss.name=softmax", "loss.name = 'softmax' is not one of"),
    ("encoder.backbones=[lexical, resnet]", "encoder.backbones = 'resnet' is not one of"),
    ("index.backend=annoy", "index.backend = 'annoy' is not one of"),
    ("train.schedule=linear", "train.schedule = 'linear' is not one of"),
    ("train.warmup=1.0", "train.warmup"),
    ("train", "override 'train': expected KEY=VALUE"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: not valid YAML")):
        load_config(bad)
    seq = tmp_path / "seq.yaml"
    seq.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(seq)
    section = tmp_path / "section.yaml"
    section.write_text("train: 3\n")
    with pytest.raises(ConfigError, match="train must be a mapping"):
        load_config(section)


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        assert isinstance(load_config(path), Config), path


@pytest.mark.parametrize(("name", "problem"), [
    ("", "must not be empty"),
    ("  ", "must not be empty"),
    ("../elsewhere", "must not contain '/'"),
    ("a/b", "must not contain '/'"),
    ("a\\b", "must not contain '/' or '\\'"),
    ("..", "must not be '.' or '..'"),
    (".", "must not be '.' or '..'"),
    (".hidden", "must not start with '.'"),
    ("a\tb", "must not contain control characters"),
    ("a\udc80", "must be valid Unicode (no lone surrogates)"),
])
def test_name_must_be_a_plain_folder_name(name, problem):
    with pytest.raises(ConfigError, match=re.escape(f"config.json: name {problem}")):
        from_dict({"name": name}, source="config.json")
    if "\udc80" not in name:  # YAML itself refuses a lone surrogate
        quoted = json.dumps(name)
        with pytest.raises(ConfigError, match=re.escape(f"--set name={quoted}: name {problem}")):
            load_config(None, [f"name={quoted}"])


def test_cli_train_refuses_an_empty_name_before_writing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from metricls.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "index" / "other").mkdir(parents=True)
    res = CliRunner().invoke(app, ["train", str(Path(__file__).parents[1] / "configs/tiny.yaml"),
                                   "--set", "name="])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error: --set name=: name must not be empty")
    assert entries(tmp_path / "index") == ["other"]


def test_errors_name_the_override_not_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3}\n")
    for override, message in [
            ("train.lr=abc", "--set train.lr=abc: train.lr must be a number, got str 'abc'"),
            ("index.backend=annoy", "--set index.backend=annoy: index.backend = 'annoy' is not"),
            ("trian.lr=1", "--set trian.lr=1: unknown config key 'trian'"),
            ("train=5", "--set train=5: train must be a mapping, got int"),
            ("train={lr: x}", "--set train={lr: x}: train.lr must be a number")]:
        with pytest.raises(ConfigError) as info:
            load_config(path, [override])
        assert str(info.value).startswith(message), info.value
        assert str(path) not in str(info.value)
    path.write_text("train: {epochs: -1}\n")  # the file's own mistake is still the file's
    with pytest.raises(ConfigError, match=re.escape(f"{path}: train.epochs must be >= 1")):
        load_config(path, ["train.lr=0.1"])


def test_config_path_that_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, kind in [(tmp_path, "a directory"), (fifo, "a FIFO"),
                       (Path("/dev/zero"), "a character device")]:
        with pytest.raises(ConfigError, match=re.escape(f"{path}: not a regular file ({kind})")):
            load_config(path)


def test_configuration_reference_is_up_to_date():
    from metricls.config_docs import COMMAND, DOC_PATH, config_reference

    path = Path(__file__).resolve().parents[1] / DOC_PATH
    assert path.is_file() and path.read_text(encoding="utf-8") == config_reference(), (
        f"{DOC_PATH} differs from the config dataclasses in metricls/config.py: "
        f"regenerate it with `{COMMAND}` and commit it")


def test_every_config_key_has_a_meaning_in_the_reference():
    from metricls.config_docs import field_meanings, sections

    meanings, parts = field_meanings(), sections(Config)
    nested = {prefix.rstrip(".") for prefix, _ in parts}  # the sections themselves
    missing = [prefix + f.name for prefix, cls in parts for f in dataclasses.fields(cls)
               if prefix + f.name not in nested and (cls.__name__, f.name) not in meanings]
    assert not missing, f"give these config fields a comment in metricls/config.py: {missing}"
