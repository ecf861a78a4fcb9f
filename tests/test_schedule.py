"""The learning-rate schedule: constant, or linear warm-up then cosine decay to zero."""

import itertools
import math

import pytest
import torch

from metricls.config import load_config
from metricls.training.trainer import _schedulers


def _lrs(schedule: str, warmup: float, steps: int) -> list[float]:
    cfg = load_config(None, [f"train.schedule={schedule}", f"train.warmup={warmup}",
                             "train.lr=0.01"])
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.train.lr)
    scheds = _schedulers([opt], cfg, steps)
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        for s in scheds:
            s.step()
    return seen


def test_constant_schedule_keeps_the_rate():
    assert _lrs("constant", 0.0, 20) == [0.01] * 20


def test_cosine_warms_up_then_decays_to_zero():
    lrs = _lrs("cosine", 0.2, 100)
    assert lrs[0] == pytest.approx(0.01 / 20)  # step 1 of a 20-step warm-up
    assert lrs[19] == pytest.approx(0.01)  # warm-up done
    assert all(a >= b for a, b in itertools.pairwise(lrs[20:]))  # then never rises
    assert lrs[60] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert lrs[-1] < 0.01 * 1e-3  # about zero at the last step
