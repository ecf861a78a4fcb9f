"""MultiLabelMiner: the base of metricls' miners, which take (B, L) multi-hot labels.

PML's ``BaseMiner.forward`` rejects 2-D labels (``check_shapes``), so this class overrides
``forward``: it validates the inputs, mines under ``torch.no_grad()`` and returns a PML
``indices_tuple`` to pass to a loss with ``labels=None``.

Verified against PML 2.9.0 (``loss(emb, indices_tuple=t)`` and
``loss(emb, indices_tuple=t, ref_emb=r)``): ContrastiveLoss, MultiSimilarityLoss,
TripletMarginLoss, SupConLoss and NTXentLoss all work, with gradients to ``emb`` and ``r``;
an empty tuple gives a zero loss. Limits found in PML itself, not worked around here:

* ``GenericPairLoss`` (Contrastive, MultiSimilarity, SupCon, NTXent) returns a zero loss when
  every index tensor has at most one element (one positive and one negative pair).
* ``TripletMarginLoss(swap=True)`` indexes ``mat[p, n]`` as if p were a query row: wrong (or an
  IndexError) with ``ref_emb``.
* ``PerAnchorReducer`` (IndexError when ref rows > B) and ``ClassWeightedReducer`` (needs
  labels) do not work with ``labels=None`` / ``ref_emb``.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_metric_learning.distances import BaseDistance, CosineSimilarity
from pytorch_metric_learning.miners import BaseMiner
from torch import Tensor

from metricls.errors import InputError

PairTuple = tuple[Tensor, Tensor, Tensor, Tensor]
TripletTuple = tuple[Tensor, Tensor, Tensor]
IndicesTuple = PairTuple | TripletTuple


def empty_tuple(arity: int, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
    """``arity`` empty int64 index tensors on ``device``."""
    return tuple(torch.empty(0, dtype=torch.long, device=device) for _ in range(arity))


def pairs_to_triplets(pairs: PairTuple) -> TripletTuple:
    """Pair each positive (a, p) with every negative (a, n) of the same anchor.

    Same triplets as PML's ``lmu.convert_to_triplets`` but in O(#triplets) memory instead of
    O(#pos * #neg).

    Args:
        pairs: ``(a1, p, a2, n)`` int64 index tensors.

    Returns:
        ``(a, p, n)``; empty tensors when no anchor has both a positive and a negative.
    """
    a1, p, a2, n = pairs
    if len(a1) == 0 or len(a2) == 0:
        return empty_tuple(3, a1.device)
    order = torch.argsort(a2, stable=True)
    n_sorted = n[order]
    size = int(torch.maximum(a1.max(), a2.max())) + 1
    counts = torch.bincount(a2, minlength=size)
    starts = torch.cumsum(counts, 0) - counts
    reps = counts[a1]  # negatives for each positive pair
    total = int(reps.sum())
    block_starts = torch.cumsum(reps, 0) - reps
    offsets = torch.arange(total, device=a1.device) - block_starts.repeat_interleave(reps)
    neg = n_sorted[starts[a1].repeat_interleave(reps) + offsets]
    return a1.repeat_interleave(reps), p.repeat_interleave(reps), neg


def check_matrix(name: str, x: Any, rows: int | None = None, cols: int | None = None) -> None:
    """Raise InputError unless ``x`` is a 2-D tensor with the given row / column counts."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    shape = tuple(x.shape)
    if x.ndim != 2:
        raise InputError(f"{name} must be 2-D, got shape {shape}")
    if rows is not None and shape[0] != rows:
        raise InputError(f"{name} must have {rows} rows, got shape {shape}")
    if cols is not None and shape[1] != cols:
        raise InputError(f"{name} must have {cols} columns, got shape {shape}")


class MultiLabelMiner(BaseMiner):
    """Base miner for multi-hot (B, L) labels; subclasses implement ``mine``.

    Args:
        triplets: return ``(a, p, n)`` (for TripletMarginLoss) instead of ``(a1, p, a2, n)``.
        **kwargs: PML ``BaseMiner`` options (``distance``, ``collect_stats``). The default
            distance is ``CosineSimilarity``; hardness follows ``distance.is_inverted``.
    """

    def __init__(self, triplets: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.triplets = bool(triplets)

    def get_default_distance(self) -> BaseDistance:
        """Cosine similarity: the hardest negatives are the most similar ones."""
        return CosineSimilarity()

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> IndicesTuple:
        """Validate, mine under ``torch.no_grad()`` and return int64 index tensors.

        Args:
            embeddings: (B, d) batch embeddings.
            labels: (B, L) multi-hot labels (bool, int or float; non-zero means present).
            ref_emb: optional (R, d) reference embeddings (meaning depends on the subclass).
            ref_labels: optional (R, L) multi-hot labels of ``ref_emb``.

        Returns:
            ``(a1, p, a2, n)`` pairs, or ``(a, p, n)`` triplets when ``triplets=True``.

        Raises:
            InputError: on a bad shape or type.
        """
        self.reset_stats()
        labels = self.check_inputs(embeddings, labels, ref_emb, ref_labels)
        if ref_labels is not None:
            ref_labels = self.as_multi_hot(ref_labels).to(embeddings.device)
        with torch.no_grad():
            pairs = self.mine(embeddings.detach(), labels, ref_emb, ref_labels)
            output = pairs_to_triplets(pairs) if self.triplets else pairs
        self.record_stats(pairs, output)
        return output

    def check_inputs(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> Tensor:
        """Check shapes (InputError naming them) and return labels as a bool (B, L) tensor."""
        check_matrix("embeddings", embeddings)
        batch, dim = embeddings.shape
        check_matrix("labels", labels, rows=batch)
        if ref_emb is not None:
            check_matrix("ref_emb", ref_emb, cols=dim)
        if ref_labels is not None:
            if ref_emb is None:
                raise InputError("ref_labels given without ref_emb")
            check_matrix("ref_labels", ref_labels, rows=ref_emb.shape[0], cols=labels.shape[1])
        return self.as_multi_hot(labels).to(embeddings.device)

    @staticmethod
    def as_multi_hot(labels: Tensor) -> Tensor:
        """A dense bool copy of (possibly sparse) multi-hot labels."""
        if labels.is_sparse:
            labels = labels.to_dense()
        return labels != 0

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
    ) -> PairTuple:
        """Return ``(a1, p, a2, n)``; ``labels`` is a bool (B, L) tensor on the right device."""
        raise NotImplementedError

    def hardness(self, embeddings: Tensor, ref_emb: Tensor) -> Tensor:
        """(B, R) scores, higher = harder negative (similarity, or minus a distance)."""
        mat = self.distance(embeddings.float(), ref_emb.float())
        return mat if self.distance.is_inverted else -mat

    def record_stats(self, pairs: PairTuple, output: IndicesTuple) -> None:
        """Set PML's ``num_pos_pairs`` / ``num_neg_pairs`` (and ``num_triplets``) stats."""
        if not self.collect_stats:
            return
        self.num_pos_pairs = len(pairs[0])
        self.num_neg_pairs = len(pairs[2])
        if len(output) == 3:
            self.num_triplets = len(output[0])


def check_count(name: str, value: int | None, allow_none: bool = True) -> int:
    """Validate a non-negative int option (None -> 0 when allowed)."""
    if value is None and allow_none:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{name} must be a non-negative int, got {value!r}")
    return value


def top_negatives(hardness: Tensor, negatives: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Row and column indices of the ``k`` hardest negatives of each row (all if k == 0).

    Args:
        hardness: (B, R) float scores, higher = harder.
        negatives: (B, R) bool mask of allowed negatives (rows without any yield nothing).
        k: negatives per row; 0 keeps every negative.
    """
    if k == 0 or k >= negatives.shape[1]:
        return torch.where(negatives)
    masked = hardness.masked_fill(~negatives, float("-inf"))
    cols = torch.topk(masked, k, dim=1).indices  # (B, k), hardest first
    keep = negatives.gather(1, cols)
    rows = torch.arange(len(cols), device=cols.device).unsqueeze(1).expand_as(cols)
    return rows[keep], cols[keep]
