"""TaggerState: the part of a tagger that label edits change, replaced whole, never edited.

A `Tagger` holds one `TaggerState`. A prediction reads it once and uses that snapshot to the
end; a label edit (`metricls.living`) builds a new state, copying every index it changes, and
the tagger swaps it in with one assignment. So a prediction running beside an edit sees the
tagger before or after the edit, never between.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.sparse as sp

from metricls.ann import AnnIndex
from metricls.data.labels import LabelVocab
from metricls.rerank import LabelStats
from metricls.scoring import Scoring
from metricls.tfidf import TfidfPrototypes


@dataclasses.dataclass(frozen=True)
class TaggerState:
    """Labels, prototypes, both indexes, the item-label matrix and the scoring of a tagger.

    Attributes:
        vocab: label names and counts; label id = position.
        prototypes: (L, d) float32, row = label id = id in `proto_index`.
        proto_index: the ANN index of the prototypes.
        item_index: the ANN index of the items behind the neighbour vote.
        item_labels: (n_items, L) CSR, row = id in `item_index`.
        scoring: blend, vote and thresholds (per-label lists have L entries or none).
        tfidf: TF-IDF label prototypes (L rows), or None.
        trained_items: rows of `item_labels` from the build; later rows are the examples of
            labels added or updated since, and go when their label goes.
    """

    vocab: LabelVocab
    prototypes: np.ndarray
    proto_index: AnnIndex
    item_index: AnnIndex
    item_labels: sp.csr_matrix
    scoring: Scoring
    tfidf: TfidfPrototypes | None = None
    trained_items: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the arrays once, here
        set_(self, "prototypes", np.ascontiguousarray(self.prototypes, dtype=np.float32))
        set_(self, "item_labels", sp.csr_matrix(self.item_labels, dtype=np.float32))
        if self.trained_items is None:
            set_(self, "trained_items", self.item_labels.shape[0])

    @functools.cached_property
    def label_stats(self) -> LabelStats:
        """Label counts and co-occurrence of `item_labels` (the reranker's features)."""
        return LabelStats.of(self.item_labels)

    def replace(self, **changes: object) -> TaggerState:
        """A new state with `changes` (the cached statistics are recomputed when read)."""
        return dataclasses.replace(self, **changes)
