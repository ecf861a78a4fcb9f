"""The pytorch-metric-learning losses metricls trains with, built from a LossConfig."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import BaseDistance, CosineSimilarity
from torch import Tensor, nn

from metricls.config import LossConfig


class DecoupledSoftmaxLoss(losses.BaseMetricLossFunction):
    """Each positive pair against its anchor's negatives only: many positives per item.

    For a positive pair (a, p) with similarity ``s_ap`` and the anchor's mined negatives N(a),
    the loss is ``-log(exp(s_ap / T) / (exp(s_ap / T) + sum_n exp(s_an / T)))``: a softmax over
    the positive and the negatives that leaves the anchor's other positives out, so an item
    with ten labels is not asked to pick one of them (as InfoNCE over all labels would).
    Takes PML pairs ``(a1, p, a2, n)`` (``ref_emb`` rows for p and n); reduced per positive
    pair by PML's reducer.

    Args:
        temperature: the softmax temperature T over cosine similarities.
        **kwargs: PML ``BaseMetricLossFunction`` options (reducer, distance).
    """

    def __init__(self, temperature: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, indices_tuple: tuple,
                     ref_emb: Tensor, ref_labels: Tensor | None) -> dict:
        a1, p, a2, n = indices_tuple
        if len(a1) == 0 or len(a2) == 0:
            return self.zero_losses()
        sim = self.distance(embeddings, ref_emb) / self.temperature  # (B, R)
        neg = torch.full_like(sim, float("-inf"))
        neg[a2, n] = sim[a2, n]
        neg_lse = torch.logsumexp(neg, dim=1)  # -inf for an anchor with no negatives
        pos = sim[a1, p]
        per_pair = F.softplus(neg_lse[a1] - pos)  # -log softmax of the positive
        return {"loss": {"losses": per_pair, "indices": (a1, p),
                         "reduction_type": "pos_pair"}}

    def get_default_distance(self) -> CosineSimilarity:
        """Cosine similarity, as every metricls loss."""
        return CosineSimilarity()

# Each entry builds, from the config and a similarity, a loss that accepts indices_tuple without
# labels; the bool says whether it takes triplets (a, p, n) rather than pairs (a1, p, a2, n).
LOSSES: dict[str, tuple[Callable[[LossConfig, BaseDistance], nn.Module], bool]] = {
    "multi_similarity": (
        lambda c, d: losses.MultiSimilarityLoss(alpha=c.alpha, beta=c.beta, base=c.base,
                                                distance=d), False),
    "contrastive": (
        lambda c, d: losses.ContrastiveLoss(pos_margin=c.pos_margin, neg_margin=c.neg_margin,
                                            distance=d), False),
    "triplet": (lambda c, d: losses.TripletMarginLoss(margin=c.margin, distance=d), True),
    "decoupled_softmax": (
        lambda c, d: DecoupledSoftmaxLoss(temperature=c.temperature, distance=d), False),
}


def build_loss(cfg: LossConfig, distance: BaseDistance | None = None) -> tuple[nn.Module, bool]:
    """The PML loss named by `cfg.name` and whether its miners must return triplets.

    Args:
        cfg: the loss settings.
        distance: the similarity the loss compares with; default `CosineSimilarity`. With
            learned label biases the trainer passes `DotProductSimilarity` over embeddings
            extended by a constant 1 and label vectors extended by their bias, so that a
            label's similarity is cos(item, label) + bias.
    """
    make, triplets = LOSSES[cfg.name]
    return make(cfg, distance if distance is not None else CosineSimilarity()), triplets
