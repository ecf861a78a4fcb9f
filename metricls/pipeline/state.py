"""TaggerState: everything the tagging pipeline reads but the encoder; replaced whole, never edited.

A `Tagger` holds one `TaggerState`. A prediction reads it once and uses that snapshot to the
end; a label edit (`metricls.pipeline.labels`) builds a new state, copying every index it
changes, and the tagger swaps it in with one assignment. So a prediction running beside an
edit sees the tagger before or after the edit, never between.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from metricls.ann import AnnIndex
from metricls.csr_keys import entries, is_small, keyed
from metricls.data.labels import LabelVocab
from metricls.pipeline.rerank import Reranker
from metricls.pipeline.scoring import Scoring
from metricls.pipeline.tfidf import TfidfPrototypes


@dataclasses.dataclass(frozen=True)
class LabelStats:
    """What the features read from the training labels: counts and co-occurrence."""

    log_counts: np.ndarray  # (L,) log(1 + items per label)
    given: sp.csr_matrix  # (L, L): [m, l] = P(l | m), the share of m's items that carry l (l != m)

    @classmethod
    def of(cls, item_labels: sp.csr_matrix) -> LabelStats:
        Y = sp.csr_matrix(item_labels, dtype=np.float32)
        Y.data[:] = 1.0
        pairs = sp.csr_matrix(Y.T @ Y)
        counts = pairs.diagonal()
        pairs.setdiag(0)
        pairs.eliminate_zeros()
        given = sp.csr_matrix(sp.diags(1.0 / np.maximum(counts, 1.0)) @ pairs, dtype=np.float32)
        return cls(np.log1p(counts).astype(np.float32), given)

    def given_at(self, m: np.ndarray, l_: np.ndarray) -> np.ndarray:
        """float32 P(l_[t] | m[t]) of label pairs, read dense when `given` is small."""
        if self._given_dense is not None:
            return self._given_dense[m, l_]
        return entries(*self._given_keyed, m, l_)

    @functools.cached_property
    def _given_dense(self) -> np.ndarray | None:
        return self.given.toarray().astype(np.float32, copy=False) if is_small(self.given) \
            else None

    @functools.cached_property
    def _given_keyed(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """`given` with its search keys (`csr_keys.keyed`), made once."""
        return keyed(self.given)


@dataclasses.dataclass(frozen=True)
class TaggerState:
    """Labels, prototypes, both indexes, the item-label matrix, the scoring and the reranker.

    Attributes:
        vocab: label names and counts; label id = position.
        prototypes: (L, d) float32, row = label id = id in `proto_index`.
        proto_index: the ANN index of the prototypes.
        item_index: the ANN index of the items behind the neighbour vote.
        item_labels: (n_items, L) CSR, row = id in `item_index`.
        scoring: blend, vote and thresholds (per-label lists have L entries or none).
        tfidf: TF-IDF label prototypes (L rows), or None.
        reranker: trees over candidate features, or None (scores are the blend).
        added_reranker: trees that score the candidates of labels made after training
            (fitted on simulated ones, `fit.fit_added_reranker`); None: `reranker` does.
        trained_items: rows of `item_labels` from the build; later rows are the examples of
            labels added or updated since, and go when their label goes.
        item_ids: the id of each row of `item_labels` (the data's id column; examples of
            added labels get "LABEL#example-N"), or None for a folder written without them.
        descriptions: {label: description} of the data's label table and of labels added
            with one; a label may be described before it is added (zero-shot from it).
        item_frozen: (trained_items, f) float16 unit rows: the trained items in the frozen
            text encoder's space (`EmbeddingModel.frozen_text`), where a label's text finds
            its zero-shot pseudo-examples (`zero_shot`); None: the tagger has no frozen text
            encoder, and a zero-shot label is its text's embedding.
    """

    vocab: LabelVocab
    prototypes: np.ndarray
    proto_index: AnnIndex
    item_index: AnnIndex
    item_labels: sp.csr_matrix
    scoring: Scoring
    tfidf: TfidfPrototypes | None = None
    reranker: Reranker | None = None
    added_reranker: Reranker | None = None
    trained_items: int | None = None
    item_ids: tuple[str, ...] | None = None
    descriptions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    item_frozen: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the arrays once, here
        set_(self, "prototypes", np.ascontiguousarray(self.prototypes, dtype=np.float32))
        set_(self, "item_labels", sp.csr_matrix(self.item_labels, dtype=np.float32))
        if self.trained_items is None:
            set_(self, "trained_items", self.item_labels.shape[0])
        if self.item_ids is not None:
            set_(self, "item_ids", tuple(self.item_ids))
            if len(self.item_ids) != self.item_labels.shape[0]:
                raise ValueError(f"{len(self.item_ids)} item ids for "
                                 f"{self.item_labels.shape[0]} rows of item_labels")
        set_(self, "descriptions", types.MappingProxyType(dict(self.descriptions)))
        if self.item_frozen is not None:
            set_(self, "item_frozen", np.ascontiguousarray(self.item_frozen, dtype=np.float16))
            if self.item_frozen.ndim != 2 or len(self.item_frozen) != self.trained_items:
                raise ValueError(f"item_frozen: {self.item_frozen.shape} for "
                                 f"{self.trained_items} trained items")

    @functools.cached_property
    def label_stats(self) -> LabelStats:
        """Label counts and co-occurrence of `item_labels` (the reranker's features)."""
        return LabelStats.of(self.item_labels)

    @functools.cached_property
    def propensities(self) -> np.ndarray:
        """(L,) label propensities of the vocabulary (`LabelVocab.propensities`)."""
        return self.vocab.propensities()

    def replace(self, **changes: object) -> TaggerState:
        """A new state with `changes` (the cached statistics are recomputed when read)."""
        return dataclasses.replace(self, **changes)
