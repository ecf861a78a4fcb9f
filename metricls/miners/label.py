"""LabelMiner: item-to-label pairs against learned label vectors passed as ``ref_emb``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metricls.errors import InputError
from metricls.miners.base import MultiLabelMiner, PairTuple, check_count, top_negatives


class LabelMiner(MultiLabelMiner):
    """Pairs (item i, label l): positive for each label of i, negative for the labels i lacks.

    Called as ``miner(embeddings, labels, ref_emb=label_vectors)``; indices in ``p`` / ``n``
    are rows of ``label_vectors`` (L, d). Each item with at least one label keeps its
    ``hard_negatives`` most similar lacking labels, plus ``random_negatives`` others drawn
    uniformly (without replacement) from the remaining lacking labels. Memory is O(B*L).

    Args:
        hard_negatives: hardest lacking labels per item; 0 or None keeps all of them.
        random_negatives: extra uniformly drawn lacking labels per item.
        seed: seed of the miner's own ``torch.Generator``; None uses torch's global RNG.
        triplets: return ``(a, p, n)`` instead of ``(a1, p, a2, n)``.
        **kwargs: PML ``BaseMiner`` options.
    """

    def __init__(
        self,
        hard_negatives: int | None = 50,
        random_negatives: int = 0,
        seed: int | None = None,
        triplets: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(triplets=triplets, **kwargs)
        self.hard_negatives = check_count("hard_negatives", hard_negatives)
        self.random_negatives = check_count("random_negatives", random_negatives, False)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.add_to_recordable_attributes(
            list_of_names=["hard_negatives", "random_negatives"], is_stat=False
        )

    def check_inputs(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> Tensor:
        """Base checks, plus ``ref_emb`` required with one row per label column."""
        if ref_emb is None:
            raise InputError("LabelMiner needs ref_emb=label_vectors of shape (L, d)")
        if ref_labels is not None:
            raise InputError("LabelMiner takes no ref_labels: row l of ref_emb is label l")
        labels = super().check_inputs(embeddings, labels, ref_emb, ref_labels)
        if ref_emb.shape[0] != labels.shape[1]:
            raise InputError(
                f"ref_emb has {ref_emb.shape[0]} rows but labels has {labels.shape[1]} columns "
                f"(shapes {tuple(ref_emb.shape)} and {tuple(labels.shape)})"
            )
        return labels

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> PairTuple:
        """Positive (item, label) pairs, then hard and random lacking labels per item."""
        a1, p = torch.where(labels)
        lacking = ~labels & labels.any(dim=1, keepdim=True)
        a2, n = top_negatives(self.hardness(embeddings, ref_emb), lacking, self.hard_negatives)
        if self.random_negatives and self.hard_negatives:
            lacking[a2, n] = False  # draw the random ones among the rest
            ra, rn = self.random_pairs(lacking)
            a2, n = torch.cat([a2, ra]), torch.cat([n, rn])
        return a1, p, a2, n

    def random_pairs(self, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """Up to ``random_negatives`` uniform draws without replacement per row of ``allowed``."""
        keys = torch.rand(allowed.shape, generator=self.generator(allowed.device),
                          device=allowed.device)
        keys.masked_fill_(~allowed, -1.0)
        k = min(self.random_negatives, allowed.shape[1])
        cols = torch.topk(keys, k, dim=1).indices
        keep = allowed.gather(1, cols)
        rows = torch.arange(len(cols), device=cols.device).unsqueeze(1).expand_as(cols)
        return rows[keep], cols[keep]

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The seeded generator for ``device`` (re-seeded on a device change), or None."""
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator
