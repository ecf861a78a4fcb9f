"""Fitting on the validation split: the scoring's blend and thresholds, and the reranker's trees.

`tune_scoring` grid-searches how neighbours become scores for the best `objective`, then
(optionally) fits a reranker and keeps it when it beats the blend out of fold; thresholds are
tuned last on the scores the tagger will give. Runs at build time only.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging

import numpy as np
import scipy.sparse as sp

from metricls.ann import make_index
from metricls.metrics import precision_at_k, psp_at_k
from metricls.pipeline.features import WIDE_KNN, pick
from metricls.pipeline.rerank import DEPTH, Candidates, Reranker, ranked
from metricls.pipeline.scoring import Scoring, tune_global_threshold, tune_label_thresholds
from metricls.pipeline.search import Neighbours, search
from metricls.pipeline.state import TaggerState
from metricls.pipeline.tag import added_candidates, candidates, combine
from metricls.pipeline.trees import BoostedTrees
from metricls.progress import progress
from metricls.prototypes import normalize_rows

log = logging.getLogger(__name__)
MIN_ITEMS = 50  # validation items needed to fit a reranker
TUNE_QUERIES = 10_000  # validation items the scoring grid search uses at most
BIAS_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # tried on valid when the labels have learned biases


def objective(ids: np.ndarray, Y: sp.csr_matrix, props: np.ndarray) -> float:
    """What scoring is tuned for on valid: P@1 + P@5 + PSP@5."""
    return precision_at_k(ids, Y, 1) + precision_at_k(ids, Y, 5) + psp_at_k(ids, Y, 5, props)


def tune_scoring(state: TaggerState, emb: np.ndarray, Y: sp.csr_matrix, *, rerank: bool = False,
                 seed: int = 0, texts: list[str] | None = None
                 ) -> tuple[Scoring, Reranker | None, dict | str]:
    """Tune how a tagger (without a reranker yet) scores on valid (at most `TUNE_QUERIES`
    items, evenly spaced).

    Grid-searches blend, k, temperature and (with learned label biases) the bias weight for the
    best `objective`; with `rerank`, then fits a reranker (`tune_reranker`) and keeps it when
    it scores better out of fold. Thresholds are tuned last, on the scores the tagger will give
    (the reranker's out-of-fold probabilities when it has one).

    `texts` (one per row of `emb`) feed the TF-IDF prototypes' features, when the tagger has
    them.

    Returns:
        The scoring, the reranker or None, and what happened to the reranker (a report).
    """
    step = max(1, -(-len(emb) // TUNE_QUERIES))
    emb, Y = emb[::step], sp.csr_matrix(Y)[::step]
    texts = texts[::step] if texts is not None else None
    base = state.scoring
    props = state.vocab.propensities()
    best, best_score = base, -1.0
    found = search(state, emb, candidates=max(base.candidates, DEPTH), knn=50,  # once, then slice
                   texts=texts)
    weights = BIAS_WEIGHTS if base.label_bias else (base.bias_weight,)
    grid = list(itertools.product((10, 25, 50), (0.02, 0.05, 0.1), weights))
    for knn, temp, weight in progress(grid, desc="tune scoring"):
        for blend in np.linspace(0.0, 1.0, 11):
            trial = dataclasses.replace(base, knn=knn, temperature=temp, blend=float(blend),
                                        bias_weight=weight)
            score = objective(combine(state, found, 5, trial)[1], Y, props)
            if score > best_score:
                best, best_score = trial, score
    log.info("scoring tuned on valid: %s", best)
    reranker, scores_ids, report = None, None, "off (index.rerank: false)"
    if rerank:
        reranker, scores_ids, report = tune_reranker(state, found, best, Y, best_score, seed)
    scores, ids = scores_ids if scores_ids is not None else combine(state, found, 20, best)
    threshold = tune_global_threshold(scores, ids, Y)
    per_label = tune_label_thresholds(scores, ids, Y, fallback=threshold)
    return dataclasses.replace(best, threshold=threshold, label_thresholds=per_label), reranker, \
        report


def tune_reranker(state: TaggerState, found: Neighbours, scoring: Scoring, Y: sp.csr_matrix,
                  plain: float, seed: int) -> tuple[Reranker | None, tuple | None, dict | str]:
    """Fit a reranker on the validation queries `found` (labels `Y`).

    It is scored out of fold (two folds of the queries, by position) and kept, refitted on all
    of them, when its out-of-fold `objective` beats `plain` (the scoring's own). Returns the
    reranker or None, its out-of-fold (scores, ids), and a report.
    """
    n = len(found.proto_ids)
    if n < MIN_ITEMS:
        return None, None, f"skipped: {n} validation items, {MIN_ITEMS} needed"
    cand = candidates(state, found, scoring, DEPTH)
    real = cand.ids >= 0
    y = truth(cand, Y)
    oof = out_of_fold(cand, y, DEPTH, seed)
    if oof is None:
        return None, None, "skipped: a validation fold has no true (or no false) candidate"
    scores, ids = ranked(oof, cand.ids, 20)
    score = objective(ids, Y, state.vocab.propensities())
    report = {"kept": score > plain, "out_of_fold": round(score, 4), "plain": round(plain, 4)}
    if score <= plain:
        return None, None, report
    return Reranker(BoostedTrees.fit(cand.features[real], y[real], seed)), (scores, ids), report


def truth(cand: Candidates, Y: sp.csr_matrix) -> np.ndarray:
    """(n, c) bool: which candidates are true labels of their query (`Y`, one row per query);
    padding (-1) is never true."""
    return (pick(Y, np.maximum(cand.ids, 0)) > 0) & (cand.ids >= 0)


def out_of_fold(cand: Candidates, y: np.ndarray, depth: int, seed: int) -> np.ndarray | None:
    """Out-of-fold reranker probabilities (n, c) of every candidate: two folds of the queries
    (by position), each scored by trees fitted on the other fold's first `depth` candidates
    (the reranker's own depth; `y` marks the true ones). None when a fold has no true or no
    false candidate. A reranker fitted on valid is in-sample there; these are not."""
    real = cand.ids >= 0
    fold = np.arange(len(cand.ids)) % 2
    within = np.zeros(cand.ids.shape, bool)
    within[:, :depth] = True
    if any(len(np.unique(y[(fold == f)[:, None] & real & within])) < 2 for f in (0, 1)):
        return None
    oof = np.zeros(cand.ids.shape, np.float32)
    for f in (0, 1):
        fit = (fold != f)[:, None] & real & within
        oof[fold == f] = Reranker(BoostedTrees.fit(cand.features[fit], y[fit], seed)).score(
            cand.features[fold == f])
    return oof


SIMULATED_SHOTS = (0, 1, 5, 20)  # examples per simulated added label (0: its text alone)
SIMULATED_SHARE = 0.5  # of the labels with enough training items


def fit_added_reranker(state: TaggerState, emb: np.ndarray, Y: sp.csr_matrix,
                       texts: list[str] | None, *, train_texts: list[str] | None,
                       label_emb: np.ndarray | None, label_texts: list[str] | None,
                       seed: int = 0) -> tuple[Reranker | None, dict | str]:
    """The few-shot reranker: trees for P(true label) of labels made after training.

    Labels added to a built tagger look different from trained ones to the reranker: a mean
    or text prototype, a handful of items, no co-occurrence. So build-index simulates them: a
    seeded `SIMULATED_SHARE` of the labels with more than max(`SIMULATED_SHOTS`) training
    items are re-made as `Tagger.add_label` would make them, each from a seeded draw of
    0, 1, 5 or 20 of its training items (0: the embedding of its name and description,
    `label_emb`): no training item carries it any more, and its examples join the item index
    as new items carrying it alone. The trees are
    fitted on the validation queries' candidates among those labels (`added_candidates`).

    Args:
        state: the built state with its (trained-label) reranker.
        emb, Y, texts: the validation queries, their labels and texts.
        train_texts: the indexed items' texts (their TF-IDF prototypes), when the tagger
            reads texts.
        label_emb, label_texts: each label's zero-shot text and its embedding (None: no
            zero-shot draws).
    """
    rng = np.random.default_rng(seed)
    Yc = sp.csc_matrix(state.item_labels[:state.trained_items])
    counts = np.diff(Yc.indptr)
    eligible = np.flatnonzero(counts > max(SIMULATED_SHOTS))
    chosen = np.sort(rng.choice(eligible, int(len(eligible) * SIMULATED_SHARE), replace=False))
    if len(chosen) < 2 or len(emb) < MIN_ITEMS:
        return None, f"skipped: {len(chosen)} labels to simulate, {len(emb)} validation items"
    shots = [s for s in SIMULATED_SHOTS if s > 0 or label_emb is not None]
    vectors = state.item_index.reconstruct()[:state.trained_items]
    prototypes, keep = state.prototypes.copy(), {}
    tfidf = state.tfidf.centroids.tolil() if state.tfidf is not None else None
    for label in chosen:
        s = int(rng.choice(shots))
        rows = rng.permutation(Yc.indices[Yc.indptr[label]:Yc.indptr[label + 1]])[:s]
        keep[int(label)] = rows
        prototypes[label] = normalize_rows(vectors[rows].mean(axis=0, keepdims=True))[0] \
            if s else label_emb[label]
        if tfidf is not None:
            words = [train_texts[r] for r in rows] if s and train_texts else [label_texts[label]]
            tfidf[label] = _unit_row(state.tfidf.prototype(words))
    added = np.zeros(len(prototypes), bool)
    added[chosen] = True
    scoring = dataclasses.replace(state.scoring, label_added=added.astype(float).tolist())
    proto_index = make_index("flat", prototypes.shape[1])
    proto_index.build(prototypes)
    examples = np.concatenate([rows for rows in keep.values()] + [np.zeros(0, np.int64)])
    owners = np.concatenate([np.full(len(rows), label) for label, rows in keep.items()]
                            + [np.zeros(0, np.int64)])
    Y_trained = state.item_labels[:state.trained_items]
    Y_trained = sp.csr_matrix(Y_trained @ sp.diags((~added).astype(np.float32)))
    Y_trained.eliminate_zeros()
    Y_examples = sp.csr_matrix((np.ones(len(owners), np.float32),
                                (np.arange(len(owners)), owners)), shape=(len(owners), len(added)))
    item_index = make_index("flat", vectors.shape[1])
    item_index.build(np.vstack([vectors, vectors[examples]]))
    simulated = state.replace(
        prototypes=prototypes, proto_index=proto_index, scoring=scoring, item_index=item_index,
        item_labels=sp.vstack([Y_trained, Y_examples], format="csr"), item_ids=None,
        tfidf=None if tfidf is None else dataclasses.replace(
            state.tfidf, centroids=sp.csr_matrix(tfidf, dtype=np.float32)))
    found = search(simulated, emb, candidates=max(scoring.candidates, DEPTH),
                   knn=max(scoring.knn, WIDE_KNN), texts=texts)
    cand = added_candidates(simulated, found, scoring, added)
    mine = cand.ids >= 0
    y = truth(cand, sp.csr_matrix(Y))
    if len(np.unique(y[mine])) < 2:
        return None, "skipped: no true (or no false) candidate among the simulated labels"
    report = {"labels": len(chosen), "candidates": int(mine.sum()),
              "true": int(y[mine].sum())}
    return Reranker(BoostedTrees.fit(cand.features[mine], y[mine], seed)), report


def _unit_row(row: sp.csr_matrix) -> sp.csr_matrix:
    """A (1, V) sparse row scaled to unit length (an empty row stays empty)."""
    norm = float(np.sqrt(row.multiply(row).sum()))
    return row / norm if norm > 0 else row
