"""DecoupledSoftmaxLoss: the formula on a hand-built case, and training through build_loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metricls.config import LossConfig
from metricls.miners import LabelMiner
from metricls.training.losses import LOSSES, DecoupledSoftmaxLoss, build_loss


def test_decoupled_softmax_matches_the_formula():
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=1)
    ref = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]]), dim=1)
    # item 0: positives 0 and 2, negatives 1 and 3; item 1: positive 1, negative 3
    t = (torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1]),
         torch.tensor([0, 0, 1]), torch.tensor([1, 3, 3]))
    T = 0.1
    loss = DecoupledSoftmaxLoss(temperature=T)(emb, indices_tuple=t, ref_emb=ref)
    s = (emb @ ref.T).tolist()

    def term(a: int, p: int, negs: list[int]) -> float:
        # the other positive of the anchor is left out of the softmax
        num = math.exp(s[a][p] / T)
        return -math.log(num / (num + sum(math.exp(s[a][n] / T) for n in negs)))

    expected = (term(0, 0, [1, 3]) + term(0, 2, [1, 3]) + term(1, 1, [3])) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_decoupled_softmax_empty_tuple_is_zero_with_gradient():
    emb = torch.randn(3, 4, requires_grad=True)
    empty = tuple(torch.empty(0, dtype=torch.long) for _ in range(4))
    loss = DecoupledSoftmaxLoss()(emb, indices_tuple=empty, ref_emb=torch.randn(5, 4))
    assert loss.item() == 0.0
    loss.backward()


def test_every_configured_loss_lowers_its_value_on_mined_label_pairs():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(32, 12, generator=g) < 0.25
    y[torch.arange(32), torch.randint(0, 12, (32,), generator=g)] = True
    for name in LOSSES:
        emb = torch.randn(32, 16, generator=g).requires_grad_()
        vecs = torch.randn(12, 16, generator=g).requires_grad_()
        loss_fn, triplets = build_loss(LossConfig(name=name))
        opt = torch.optim.SGD([emb, vecs], lr=0.5)
        values = []
        for _ in range(8):
            ref = F.normalize(vecs, dim=1)
            t = LabelMiner(hard_negatives=0, triplets=triplets)(emb, y, ref_emb=ref)
            loss = loss_fn(emb, indices_tuple=t, ref_emb=ref)
            opt.zero_grad()
            loss.backward()
            opt.step()
            values.append(loss.item())
        assert values[-1] < values[0], (name, values)
