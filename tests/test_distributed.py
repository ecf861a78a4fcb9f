"""Multi-process training (DDP, gloo on CPU) and the training precision setting."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import entries
from safetensors.torch import load_file, save_file

from metricls import Tagger, build_index, load_config
from metricls.data.dataset import Dataset
from metricls.encoders.model import build_model
from metricls.errors import ConfigError
from metricls.metrics import recall_at_k
from metricls.training.distributed import launch_ranks, process_group
from metricls.training.precision import autocast, grad_scaler, resolve_precision
from metricls.training.trainer import fit, seed_everything

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
CPU = torch.device("cpu")


def _history(folder: Path) -> list[dict]:
    return json.loads((folder / "training.json").read_text())["history"]


def _untrained_recall(cfg, data: Dataset) -> float:
    """Valid R@10 of a fresh model against fresh label vectors, seeded as `fit` seeds them."""
    seed_everything(cfg.train.seed)
    model = build_model(cfg.encoder)
    vectors = torch.nn.functional.normalize(torch.randn(len(data.vocab), model.out_dim), dim=1)
    scores = model.embed(data.valid.texts) @ vectors.numpy().T
    return recall_at_k(np.argsort(-scores, axis=1)[:, :10], data.labels("valid"), 10)


def test_torchrun_two_processes_train_like_one(tmp_path, synthetic_path, tiny_tagger_dir):
    """2 processes split each batch: the same losses as the 1-process tiny tagger, one folder."""
    out = tmp_path / "taggers" / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "metricls.cli", "-q", "train", str(TINY), "--set", f"data.path={synthetic_path}",
           "--set", "train.threads=1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained:") == 1, done.stdout  # only rank 0 reports
    assert entries(out.parent) == ["ddp"]  # one folder, no leftovers

    one, two = _history(tiny_tagger_dir), _history(out)
    assert [h["epoch"] for h in two] == [h["epoch"] for h in one]
    # the split batch is the same update as one process up to float summation order
    np.testing.assert_allclose([h["loss"] for h in two], [h["loss"] for h in one], rtol=1e-3)
    assert two[-1]["valid_R@10"] == pytest.approx(one[-1]["valid_R@10"], abs=0.02)
    cfg = load_config(TINY, [f"data.path={synthetic_path}"])
    untrained = _untrained_recall(cfg, Dataset.load(cfg.data))
    assert two[-1]["valid_R@10"] > untrained + 0.5 * (1 - untrained)

    build_index(out)
    data = Dataset.load(cfg.data)
    texts = data.valid.texts
    ddp_top = [row[0][0] for row in Tagger.load(out).predict(texts, k=1)]
    one_top = [row[0][0] for row in Tagger.load(tiny_tagger_dir).predict(texts, k=1)]
    assert np.mean([a == b for a, b in zip(ddp_top, one_top)]) >= 0.95
    hits = [top in labels for top, labels in zip(ddp_top, data.valid.labels)]
    assert np.mean(hits) > 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fit_rank(rank: int, world: int, port: int, data_path: str, out: str) -> None:
    """One spawned process: join the group through torchrun's variables, fit, save the result."""
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cfg = load_config(TINY, [f"data.path={data_path}", "train.epochs=2", "train.threads=1"])
    result = fit(cfg, Dataset.load(cfg.data))
    tensors = {f"model.{k}": v.contiguous() for k, v in result.model.state_dict().items()}
    tensors["label_vectors"] = torch.from_numpy(result.label_vectors)
    save_file(tensors, f"{out}/rank{rank}.safetensors")
    Path(f"{out}/rank{rank}.json").write_text(json.dumps(result.history))


def test_ranks_end_with_identical_parameters(tmp_path, synthetic_path):
    """DDP keeps the processes in step, sparse lexical gradients included."""
    ranks = torch.multiprocessing.spawn(_fit_rank, nprocs=2, join=False, args=(
        2, _free_port(), str(synthetic_path), str(tmp_path)))
    deadline = time.monotonic() + 300  # a guard against a hang, not a speed check
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the spawned processes did not finish within 300 s")
    first, second = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert first.keys() == second.keys() and "model.backbones.0.bag.weight" in first
    for key in first:
        assert torch.equal(first[key], second[key]), key
    start = build_model(load_config(TINY).encoder).state_dict()["backbones.0.bag.weight"]
    assert not torch.equal(first["model.backbones.0.bag.weight"], start)  # it did train
    assert (tmp_path / "rank0.json").read_text() == (tmp_path / "rank1.json").read_text()


def test_launch_ranks_reads_torchrun_variables():
    assert launch_ranks({}) == (0, 1, 0)
    assert launch_ranks({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        launch_ranks({"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="0 <= RANK < WORLD_SIZE"):
        launch_ranks({"RANK": "2", "WORLD_SIZE": "2"})


def test_world_size_without_a_launcher_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=2: cannot join.*MASTER_ADDR"), \
            process_group("cpu"):
        pass


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_mixed_precision_falls_back_to_fp32_on_cpu(name, caplog):
    with caplog.at_level(logging.WARNING, logger="metricls"):
        assert resolve_precision(name, True, CPU) == "fp32"
    assert f"train.precision={name} needs CUDA: training in fp32" in caplog.text
    assert not grad_scaler("fp32").is_enabled()
    with autocast("fp32", CPU):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


def test_auto_precision_is_silent_fp32_on_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger="metricls"):
        assert resolve_precision("auto", True, CPU) == "fp32"
    assert caplog.text == ""
    with pytest.raises(ConfigError, match=r"train.precision = 'fp8' is not one of \['auto'"):
        load_config(TINY, ["train.precision=fp8"])


def test_fit_with_bf16_on_cpu_trains_as_fp32(synthetic_path, tiny_tagger_dir, caplog):
    """The fallback is plain fp32: training matches the fp32 tiny tagger's exactly (all its
    epochs: the learning-rate schedule spans them)."""
    cfg = load_config(TINY, [f"data.path={synthetic_path}", "train.precision=bf16"])
    with caplog.at_level(logging.WARNING, logger="metricls"):
        result = fit(cfg, Dataset.load(cfg.data))
    assert "training in fp32" in caplog.text
    assert result.history == _history(tiny_tagger_dir)
