"""Step 1 of tagging: search the prototype and item indexes (and the TF-IDF prototypes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from metricls.errors import InputError
from metricls.pipeline.state import TaggerState


class Neighbours(NamedTuple):
    """What one search found: prototypes and training items, each (n, k) in FAISS order, and
    the (n, L) cosines to the TF-IDF prototypes when the tagger has them and read the texts."""

    proto_scores: np.ndarray
    proto_ids: np.ndarray
    item_scores: np.ndarray
    item_ids: np.ndarray
    tfidf: sp.csr_matrix | None = None


def search(state: TaggerState, emb: np.ndarray, *, candidates: int, knn: int,
           texts: Sequence[str] | None = None) -> Neighbours:
    """Nearest prototypes and nearest items of (n, d) embeddings (no item search for `knn` 0:
    (n, 0) results), and the texts' TF-IDF prototype cosines when given."""
    protos = state.proto_index.search(emb, min(candidates, len(state.vocab)))
    knn = min(knn, state.item_index.ntotal)
    items = state.item_index.search(emb, knn) if knn > 0 else (
        np.zeros((len(emb), 0), np.float32), np.zeros((len(emb), 0), np.int64))
    tfidf = None
    if state.tfidf is not None and texts is not None:
        if len(texts) != len(emb):
            raise InputError(f"texts: expected one per embedding ({len(emb)}), got {len(texts)}")
        tfidf = state.tfidf.scores(texts)
    return Neighbours(*protos, *items, tfidf)
