"""Step 2 of tagging: the reranker's view of each query's best candidate labels.

Cosine similarity to a prototype ranks items well within one label, but it is not comparable
across labels: a broad label (`role::program`) sits farther from its own items than a narrow
one (`role::devel-lib`), so the narrow label wins the first place too often. The reranker
(`rerank.py`) learns P(candidate is a true label | its evidence) from a few features per
candidate (`rerank.FEATURES`): its cosine, how common the label is, the neighbour votes, its
rank and its distance to the best candidate, its co-occurrence with the leaders, and its
TF-IDF prototype's cosine and rank.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from metricls.csr_keys import entries, is_small, keyed
from metricls.pipeline.rerank import Candidates
from metricls.pipeline.scoring import Scoring, vote_matrices, with_label_bias
from metricls.pipeline.search import Neighbours
from metricls.pipeline.state import LabelStats
from metricls.pipeline.tfidf import rank_in_rows

WIDE_KNN, WIDE_TEMPERATURE = 30, 1.0  # the "vote_wide" feature: a flat vote of 30 neighbours
LEADERS = 3  # "co_occurrence": how often the label goes with one of the 3 best candidates


def candidate_features(found: Neighbours, item_labels: sp.csr_matrix, stats: LabelStats,
                       scoring: Scoring, depth: int) -> Candidates:
    """Features of the `depth` best candidates by (biased) cosine of each query.

    Args:
        found: the prototype search (n, >= depth), the training-item search (n, >= WIDE_KNN
            when there are that many items), and the TF-IDF cosines (zero features without).
        item_labels: (n_train, L) labels of the indexed training items.
        stats: `LabelStats.of(item_labels)`.
        scoring: its `knn`, `temperature` and label biases shape the "vote" and "cosine".
    """
    item_scores, item_ids = found.item_scores, found.item_ids
    cos = with_label_bias(found.proto_scores, found.proto_ids, scoring)[:, :depth]
    ids = found.proto_ids[:, :depth]
    real = ids >= 0
    safe = np.maximum(ids, 0)
    n, c = ids.shape
    votes = vote_matrices([(item_scores[:, :k], item_ids[:, :k], t) for k, t in
                           ((scoring.knn, scoring.temperature), (WIDE_KNN, WIDE_TEMPERATURE))],
                          item_labels)  # rows: the vote of each query, then the wide vote
    vote, wide = np.split(pick(votes, np.concatenate([safe, safe])), 2)
    top = np.where(real[:, :1], cos[:, :1], 0.0)
    cos = np.where(real, cos, top - 2.0)  # padding: far below every real candidate
    rank = np.broadcast_to(np.log1p(np.arange(c, dtype=np.float32)), (n, c))
    tfidf = tfidf_rank = np.zeros((n, c), np.float32)
    if found.tfidf is not None:
        tfidf = pick(found.tfidf, safe)
        tfidf_rank = np.log1p(rank_in_rows(found.tfidf, tfidf))
    X = np.stack([cos, stats.log_counts[safe], vote, wide, rank, top - cos,
                  np.broadcast_to(top, (n, c)), _co_occurrence(stats, safe, real, cos),
                  tfidf, tfidf_rank], axis=-1)
    return Candidates(ids, X.astype(np.float32))


def _co_occurrence(stats: LabelStats, ids: np.ndarray, found: np.ndarray,
                   cos: np.ndarray) -> np.ndarray:
    """(n, c): max over the `LEADERS` best candidates m of max(cos_m, 0) * P(candidate | m)."""
    n, c = ids.shape
    lead = min(LEADERS, c)
    if n == 0 or lead == 0:
        return np.zeros((n, c), np.float32)
    weight = np.where(found[:, :lead], np.maximum(cos[:, :lead], 0.0), 0.0)  # (n, lead)
    m = np.broadcast_to(ids[:, :lead, None], (n, lead, c)).ravel()
    l_ = np.broadcast_to(ids[:, None, :], (n, lead, c)).ravel()
    share = stats.given_at(m, l_).reshape(n, lead, c)
    return (weight[:, :, None] * share).max(axis=1)


def pick(V: sp.csr_matrix, ids: np.ndarray) -> np.ndarray:
    """(n, c) float32 entries V[i, ids[i, j]] of a sparse (n, L) matrix (`ids` in [0, L)):
    through a dense copy when V is small (`is_small`), else by binary search."""
    if ids.size == 0:
        return np.zeros(ids.shape, np.float32)
    if is_small(V):
        return np.take_along_axis(V.toarray(), ids, 1).astype(np.float32, copy=False)
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    return entries(*keyed(V), rows, ids.ravel()).reshape(ids.shape)
