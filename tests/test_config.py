import re

import pytest

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
