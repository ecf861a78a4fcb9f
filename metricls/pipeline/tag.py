"""The tagging pipeline's one entry point: embeddings (and texts) to top-k scored labels.

`score` runs the steps in order on one `TaggerState` snapshot, in batches of `SCORE_BATCH`:
search (`search.py`) -> with a reranker, candidate features (`features.py`) and trees
(`rerank.py`); without, the blend of prototype similarity and neighbour vote (`scoring.py`).
`Tagger.predict`, the evaluation, the catalog and the service all go through `score`; build
time tuning calls `combine` on one search result with many trial scorings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from metricls.errors import InputError
from metricls.pipeline.features import WIDE_KNN, candidate_features
from metricls.pipeline.rerank import Candidates
from metricls.pipeline.scoring import (
    Scoring,
    apply_thresholds,
    blend_scores,
    prototype_matrix,
    top_k,
    vote_matrix,
    with_label_bias,
)
from metricls.pipeline.search import Neighbours, search
from metricls.pipeline.state import TaggerState
from metricls.validation import check_k, to_number

SCORE_BATCH = 2048  # rows scored at a time: memory stays O(batch x candidates)


def score(state: TaggerState, emb: np.ndarray, k: int,
          texts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores f32, ids i64), each (n, k), of (n, d) embeddings (and their texts, which
    a reranker that reads TF-IDF needs: `reads_texts`); padding score -inf, id -1."""
    parts = [combine(state, neighbours(state, emb[s:s + SCORE_BATCH], k,
                                       None if texts is None else texts[s:s + SCORE_BATCH]),
                     k, state.scoring)
             for s in range(0, max(len(emb), 1), SCORE_BATCH)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def reads_texts(state: TaggerState) -> bool:
    """Whether scoring reads the texts beside their embeddings (the reranker's TF-IDF)."""
    return state.tfidf is not None and state.reranker is not None


def neighbours(state: TaggerState, emb: np.ndarray, k: int,
               texts: Sequence[str] | None = None) -> Neighbours:
    """The search behind `score`: enough prototypes for top-k, and the knn items that the
    reranker or the scoring's vote reads (none for blend 1 without a reranker), and the TF-IDF
    cosines of the `texts` (required when `reads_texts`)."""
    s = state.scoring
    if state.reranker is not None:
        if reads_texts(state) and texts is None:
            raise InputError("texts: this tagger's reranker reads the texts beside their "
                             "embeddings (TF-IDF prototypes); pass texts=")
        return search(state, emb, candidates=max(s.candidates, state.reranker.depth, k),
                      knn=max(s.knn, WIDE_KNN), texts=texts)
    return search(state, emb, candidates=max(s.candidates, k), knn=s.knn if s.blend < 1 else 0)


def combine(state: TaggerState, found: Neighbours, k: int,
            scoring: Scoring) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of one search: the reranker's probabilities when the state has one,
    else the blend of prototype similarity and the neighbour vote under `scoring`."""
    if state.reranker is not None:
        return state.reranker.top_k(
            candidates(state, found, scoring, max(state.reranker.depth, k)), k)
    n_labels = len(state.vocab)
    P = V = sp.csr_matrix((len(found.proto_ids), n_labels), dtype=np.float32)
    if scoring.blend > 0:
        P = prototype_matrix(with_label_bias(found.proto_scores, found.proto_ids, scoring),
                             found.proto_ids, n_labels)
    if scoring.blend < 1:
        V = vote_matrix(found.item_scores[:, :scoring.knn], found.item_ids[:, :scoring.knn],
                        state.item_labels, scoring.temperature)
    return top_k(blend_scores(P, V, scoring.blend), k)


def candidates(state: TaggerState, found: Neighbours, scoring: Scoring,
               depth: int) -> Candidates:
    """The reranker's view of the `depth` best prototypes: their ids and features."""
    return candidate_features(found, state.item_labels, state.label_stats, scoring, depth)


def named(state: TaggerState, scores: np.ndarray, ids: np.ndarray,
          threshold: float | str | None, cut: float | None) -> list[list[tuple[str, float]]]:
    """(label, score) lists of top-k results: all of them (`threshold` None), those scoring
    at least `cut`, or (`threshold` "tuned", `cut` None) those past each label's threshold."""
    keep = ids >= 0 if threshold is None else apply_thresholds(scores, ids, state.scoring, cut)
    names = state.vocab.names
    return [[(names[i], float(s)) for i, s, ok in zip(row_ids, row_scores, row_keep) if ok]
            for row_ids, row_scores, row_keep in zip(ids, scores, keep)]


def selection(k: int, threshold: float | str | None,
              state: TaggerState) -> tuple[int, float | None]:
    """k capped at the label count, and the numeric threshold (None for None or "tuned");
    InputError for a bad k or threshold."""
    k = min(check_k(k), len(state.vocab))  # more than L tags cannot exist
    if threshold is None or (isinstance(threshold, str) and threshold == "tuned"):
        return k, None
    try:
        return k, to_number(threshold)  # refuses bools, strings, arrays, NaN, inf, 10**400
    except InputError as exc:
        raise InputError(f"threshold: expected None, a number or 'tuned'; {exc}") from None
