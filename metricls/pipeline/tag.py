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
from metricls.pipeline.rerank import Candidates, padded, ranked
from metricls.pipeline.scoring import (
    TAIL_DEPTH,
    TAIL_FROM,
    Scoring,
    apply_thresholds,
    blend_scores,
    prototype_matrix,
    top_k,
    vote_matrix,
    with_label_bias,
    with_tail,
)
from metricls.pipeline.search import Neighbours, search
from metricls.pipeline.state import TaggerState
from metricls.validation import check_k, to_number

SCORE_BATCH = 2048  # rows scored at a time: memory stays O(batch x candidates)
ADDED_DEPTH = 40  # candidates among the labels added after training, per query
# an added label's probability: this share from the few-shot reranker, divided by its number
# of examples (when more than one), the rest from the trained labels' (chosen on valid, see
# docs/labels.md): the few-shot reranker learned on labels the encoder had seen, so it is
# too cautious for a new label once a few of its items are indexed
FEW_SHOT_WEIGHT = 0.5
MAX_EXTRA = 1000  # most added labels (and examples) the searches look beyond


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
        extra = _added_counts(state)  # searched beyond, so that the trained ones are complete
        return search(state, emb,
                      candidates=max(s.candidates, state.reranker.depth, _depth(state, s, k))
                      + extra[0],
                      knn=max(s.knn, WIDE_KNN) + extra[1], texts=texts)
    return search(state, emb, candidates=max(s.candidates, k),
                  knn=s.knn if s.blend < 1 else 0)


def _tailed(state: TaggerState, scoring: Scoring, k: int) -> bool:
    """Whether top-k re-orders the places after `TAIL_FROM` (`Scoring.tail_weight`): only
    scores that are probabilities (the reranker's) are comparable with propensities; the
    blend's lie in a narrow band, where dividing by the propensity would put rare labels
    above every other."""
    return state.reranker is not None and bool(scoring.tail_weight) and k > TAIL_FROM


def _depth(state: TaggerState, scoring: Scoring, k: int) -> int:
    """How many labels are ranked for top-k: at least `TAIL_DEPTH` when the tail is
    re-ordered."""
    return max(k, TAIL_DEPTH) if _tailed(state, scoring, k) else k


def combine(state: TaggerState, found: Neighbours, k: int,
            scoring: Scoring) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of one search: the reranker's probabilities when the state has one,
    else the blend of prototype similarity and the neighbour vote under `scoring`."""
    scores, ids, _ = scored(state, found, k, scoring)
    return scores, ids


def scored(state: TaggerState, found: Neighbours, k: int,
           scoring: Scoring) -> tuple[np.ndarray, np.ndarray, Candidates | None]:
    """`combine`'s top-k (scores, ids) and, with a reranker, the candidates it scored."""
    if state.reranker is None:
        return (*top_k(blend_scores(*_blend_parts(state, found, scoring), scoring.blend), k),
                None)
    depth_k = max(state.reranker.depth, k)
    probabilities, cand, own = reranked(state, found, scoring,
                                        max(depth_k, _depth(state, scoring, k)))
    if not _tailed(state, scoring, k):
        return (*ranked(probabilities, cand.ids, k), cand)
    return (*tail_ranked(probabilities, cand.ids, (state.reranker.depth, own),
                         _depth(state, scoring, k), scoring.tail_weight, state.propensities, k),
            cand)


def tail_ranked(probabilities: np.ndarray, ids: np.ndarray, deeper: tuple[int, int], depth: int,
                weight: float, propensities: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of reranked candidates with the tail ordering (`with_tail`).

    The candidates in columns `deeper` (start, stop: the trained labels' candidates past the
    reranker's own depth) rank after the others, so the first places are the same for every
    k, as top-5 without the tail; the best `depth` then go to `with_tail`."""
    behind = np.zeros(ids.shape, bool)
    behind[:, deeper[0]:deeper[1]] = True
    order = np.argsort(np.where(ids >= 0, -probabilities + 2.0 * behind, np.inf),
                       axis=1, kind="stable")[:, :depth]
    ids = np.take_along_axis(ids, order, 1)
    scores = np.where(ids >= 0, np.take_along_axis(probabilities, order, 1), -np.inf)
    return padded(*with_tail(scores.astype(np.float32), ids, weight, propensities, k), k)


def _blend_parts(state: TaggerState, found: Neighbours,
                 scoring: Scoring) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The prototype and vote matrices (n, L) of the blend (empty where its weight is 0)."""
    n_labels = len(state.vocab)
    P = V = sp.csr_matrix((len(found.proto_ids), n_labels), dtype=np.float32)
    if scoring.blend > 0:
        P = prototype_matrix(with_label_bias(found.proto_scores, found.proto_ids, scoring),
                             found.proto_ids, n_labels)
    if scoring.blend < 1:
        V = vote_matrix(found.item_scores[:, :scoring.knn], found.item_ids[:, :scoring.knn],
                        state.item_labels, scoring.temperature)
    return P, V


def candidates(state: TaggerState, found: Neighbours, scoring: Scoring,
               depth: int) -> Candidates:
    """The reranker's view of the `depth` best prototypes: their ids and features."""
    return candidate_features(found, state.item_labels, state.label_stats, scoring, depth)


def reranked(state: TaggerState, found: Neighbours, scoring: Scoring,
             depth: int) -> tuple[np.ndarray, Candidates, int]:
    """The reranker's probabilities (n, c) of its candidates, the candidates, and how many
    of their columns (the first) are the trained labels' own.

    With labels added after training (`Scoring.added_mask`), the trained labels are scored
    as if none had been added: their features come from the search without the added
    prototypes and without the examples they brought into the item index, so an added label
    never changes a trained label's score. The added labels (`added_candidates`) are scored
    among all the candidates by the trained labels' reranker, mixed with the few-shot
    reranker (`few_shot_weight`; fitted on simulated added labels at build time) when the
    tagger has one; the two sets are joined (ids -1 pad).
    """
    reranker = state.reranker
    added = scoring.added_mask
    if added is None:
        cand = candidates(state, found, scoring, depth)
        return reranker.score(cand.features), cand, cand.ids.shape[1]
    own = candidates(state, _without_added(state, found, scoring, depth), scoring, depth)
    new = added_candidates(state, found, scoring, added)
    cand = Candidates(np.concatenate([own.ids, new.ids], axis=1),
                      np.concatenate([own.features, new.features], axis=1))
    scores = reranker.score(new.features)
    if state.added_reranker is not None:
        weight = few_shot_weight(state.vocab.counts[np.maximum(new.ids, 0)])
        scores = (1 - weight) * scores + weight * state.added_reranker.score(new.features)
    return (np.concatenate([reranker.score(own.features), scores], axis=1), cand,
            own.ids.shape[1])


def few_shot_weight(examples: np.ndarray) -> np.ndarray:
    """The few-shot reranker's share of an added label's probability, by its number of
    examples: `FEW_SHOT_WEIGHT` with none or one, `FEW_SHOT_WEIGHT` / n with n."""
    return FEW_SHOT_WEIGHT / np.maximum(np.asarray(examples, dtype=np.float32), 1.0)


def added_candidates(state: TaggerState, found: Neighbours, scoring: Scoring,
                     added: np.ndarray) -> Candidates:
    """The `ADDED_DEPTH` best added labels of each query by cosine, with their features among
    every searched candidate (so their rank may exceed the reranker's depth)."""
    every = candidates(state, found, scoring, found.proto_ids.shape[1])
    order, mine = _kept_first((every.ids >= 0) & added[np.maximum(every.ids, 0)])
    order, mine = order[:, :ADDED_DEPTH], mine[:, :ADDED_DEPTH]
    ids = np.where(mine, np.take_along_axis(every.ids, order, 1), -1)
    return Candidates(ids, np.take_along_axis(every.features, order[:, :, None], 1))


def _added_counts(state: TaggerState) -> tuple[int, int]:
    """How many labels and indexed examples were added after training (at most
    `MAX_EXTRA` each): the searches look that much further, so that without them the trained
    labels' candidates and neighbours are what they were before (`_without_added`)."""
    added = state.scoring.added_mask
    labels = 0 if added is None else int(added.sum())
    return (min(labels, MAX_EXTRA),
            min(state.item_labels.shape[0] - state.trained_items, MAX_EXTRA))


def _without_added(state: TaggerState, found: Neighbours, scoring: Scoring,
                  depth: int) -> Neighbours:
    """The search results without the labels added after training and without the items past
    the trained ones (their examples), the rest moved left in order (-1 / -inf padding) and
    cut to what a search for `depth` candidates without them returns; the added labels' TF-IDF
    cosines are dropped (zero), so the trained labels' TF-IDF ranks are what they were."""
    added = scoring.added_mask
    if added is None:
        return found
    candidates, knn = max(scoring.candidates, depth), max(scoring.knn, WIDE_KNN)
    proto = _kept(found.proto_scores, found.proto_ids,
                  (found.proto_ids >= 0) & ~added[np.maximum(found.proto_ids, 0)])
    items = _kept(found.item_scores, found.item_ids,
                  (found.item_ids >= 0) & (found.item_ids < state.trained_items))
    tfidf = found.tfidf
    if tfidf is not None:  # the added labels' TF-IDF cosines would move the trained ones' ranks
        tfidf = sp.csr_matrix(tfidf @ sp.diags((~added).astype(np.float32)))
        tfidf.eliminate_zeros()
    return Neighbours(proto[0][:, :candidates], proto[1][:, :candidates],
                      items[0][:, :knn], items[1][:, :knn], tfidf)


def _kept_first(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column order that moves each row's kept entries first, in their order, and the
    kept mask in that order."""
    order = np.argsort(~keep, axis=1, kind="stable")
    return order, np.take_along_axis(keep, order, 1)


def _kept(scores: np.ndarray, ids: np.ndarray,
          keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's kept entries first, in their order; the rest become -inf / -1."""
    order, kept = _kept_first(keep)
    return (np.where(kept, np.take_along_axis(scores, order, 1), -np.inf).astype(np.float32),
            np.where(kept, np.take_along_axis(ids, order, 1), -1))


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
