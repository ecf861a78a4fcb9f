"""LabelBatchSampler: draw labels, then items of each label, so every batch holds positives."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from metricls.errors import InputError


class LabelBatchSampler:
    """Batches of item indices built label first, so tail labels get positives too.

    Each batch draws `labels_per_batch` distinct labels with probability proportional to
    count ** `power` (1 = as in the data, 0 = uniform over labels, which favours the tail),
    then `batch_size // labels_per_batch` items of each; the rest is filled at random.

    Args:
        Y: (n, L) CSR multi-hot labels of the training items.
        batch_size: items per batch.
        labels_per_batch: labels drawn per batch.
        power: exponent on label counts for drawing labels.
        seed: seed of the sampler's generator; `set_epoch` varies it per epoch.
    """

    def __init__(self, Y: sp.csr_matrix, batch_size: int, labels_per_batch: int,
                 power: float = 0.5, seed: int = 0) -> None:
        if batch_size < 2 or labels_per_batch < 1:
            raise InputError(f"train.batch_size must be >= 2 and train.labels_per_batch >= 1, "
                             f"got {batch_size} and {labels_per_batch}")
        csc = sp.csc_matrix(Y)
        counts = np.diff(csc.indptr)
        self.labels = np.flatnonzero(counts)  # labels with at least one item
        if len(self.labels) == 0:
            raise InputError("no training item has a label: nothing to learn from")
        self.indptr, self.items = csc.indptr, csc.indices
        weights = counts[self.labels].astype(np.float64) ** power
        self.probs = weights / weights.sum()
        self.n = Y.shape[0]
        self.batch_size = min(batch_size, self.n)
        self.labels_per_batch = min(labels_per_batch, len(self.labels))
        self.per_label = max(1, self.batch_size // self.labels_per_batch)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(len(self)):
            yield self._batch(rng)

    def _batch(self, rng: np.random.Generator) -> np.ndarray:
        chosen = rng.choice(self.labels, size=self.labels_per_batch, replace=False, p=self.probs)
        parts = []
        for label in chosen:
            pool = self.items[self.indptr[label]:self.indptr[label + 1]]
            take = min(self.per_label, len(pool))
            parts.append(rng.choice(pool, size=take, replace=False))
        batch = np.unique(np.concatenate(parts))
        room = self.batch_size - len(batch)
        if room > 0:
            extra = rng.choice(self.n, size=room, replace=False)
            batch = np.unique(np.concatenate([batch, extra]))[: self.batch_size]
        return rng.permutation(batch)
