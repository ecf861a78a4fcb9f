"""The pytorch-metric-learning losses metricls trains with, built from a LossConfig."""

from __future__ import annotations

from collections.abc import Callable

from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import CosineSimilarity
from torch import nn

from metricls.config import LossConfig

# Each entry builds a loss that accepts indices_tuple without labels; the bool says whether it
# takes triplets (a, p, n) rather than pairs (a1, p, a2, n).
LOSSES: dict[str, tuple[Callable[[LossConfig], nn.Module], bool]] = {
    "multi_similarity": (
        lambda c: losses.MultiSimilarityLoss(alpha=c.alpha, beta=c.beta, base=c.base), False),
    "contrastive": (
        lambda c: losses.ContrastiveLoss(pos_margin=c.pos_margin, neg_margin=c.neg_margin,
                                         distance=CosineSimilarity()), False),
    "triplet": (
        lambda c: losses.TripletMarginLoss(margin=c.margin, distance=CosineSimilarity()), True),
}


def build_loss(cfg: LossConfig) -> tuple[nn.Module, bool]:
    """The PML loss named by `cfg.name` and whether its miners must return triplets."""
    make, triplets = LOSSES[cfg.name]
    return make(cfg), triplets
