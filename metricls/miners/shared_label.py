"""SharedLabelMiner: item-to-item pairs within a batch, from label-set overlap."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metricls.errors import InputError
from metricls.miners.base import MultiLabelMiner, PairTuple, check_count, top_negatives


class SharedLabelMiner(MultiLabelMiner):
    """Positives: pairs (i != j) with label-set Jaccard >= ``min_jaccard``; negatives: pairs
    sharing no label, limited to the ``hard_negatives`` most similar ones of each anchor.

    Only anchors with at least one positive keep negatives (pair losses need both). Indices
    refer to rows of the batch; ``ref_emb`` is not supported.

    Args:
        min_jaccard: Jaccard threshold in (0, 1] for a positive pair.
        hard_negatives: negatives kept per anchor (hardest first); 0 or None keeps all.
        triplets: return ``(a, p, n)`` instead of ``(a1, p, a2, n)``.
        **kwargs: PML ``BaseMiner`` options.
    """

    def __init__(
        self,
        min_jaccard: float = 0.5,
        hard_negatives: int | None = 20,
        triplets: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(triplets=triplets, **kwargs)
        if isinstance(min_jaccard, bool) or not 0.0 < float(min_jaccard) <= 1.0:
            raise InputError(f"min_jaccard must be in (0, 1], got {min_jaccard!r}")
        self.min_jaccard = float(min_jaccard)
        self.hard_negatives = check_count("hard_negatives", hard_negatives)
        self.add_to_recordable_attributes(
            list_of_names=["min_jaccard", "hard_negatives"], is_stat=False
        )

    def check_inputs(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> Tensor:
        """Base checks, and no ``ref_emb`` / ``ref_labels``."""
        if ref_emb is not None or ref_labels is not None:
            raise InputError("SharedLabelMiner mines within the batch: ref_emb is not supported")
        return super().check_inputs(embeddings, labels, ref_emb, ref_labels)

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> PairTuple:
        """Jaccard positives and hardest no-shared-label negatives, in O(B*B) memory."""
        y = labels.float()
        inter = y @ y.T  # exact integer counts in float32
        sizes = y.sum(dim=1)
        union = (sizes.unsqueeze(1) + sizes.unsqueeze(0) - inter).double()
        jaccard = inter.double() / union.clamp_min(1.0)
        not_self = ~torch.eye(len(y), dtype=torch.bool, device=y.device)
        positives = (jaccard >= self.min_jaccard) & not_self
        negatives = (inter == 0) & not_self & positives.any(dim=1, keepdim=True)
        a1, p = torch.where(positives)
        hardness = self.hardness(embeddings, embeddings)
        a2, n = top_negatives(hardness, negatives, self.hard_negatives)
        return a1, p, a2, n
