"""Fitting on the validation split: the scoring's blend and thresholds, and the reranker's trees.

`tune_scoring` grid-searches how neighbours become scores for the best `objective`, then
(optionally) fits a reranker and keeps it when it beats the blend out of fold; thresholds are
tuned last on the scores the tagger will give. Runs at build time only (scikit-learn).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging

import numpy as np
import scipy.sparse as sp

from metricls.metrics import precision_at_k, psp_at_k
from metricls.pipeline.features import pick
from metricls.pipeline.rerank import DEPTH, Reranker, ranked
from metricls.pipeline.scoring import Scoring, tune_global_threshold, tune_label_thresholds
from metricls.pipeline.search import Neighbours, search
from metricls.pipeline.state import TaggerState
from metricls.pipeline.tag import candidates, combine
from metricls.pipeline.trees import TreeEnsemble
from metricls.progress import progress

log = logging.getLogger(__name__)
MIN_ITEMS = 50  # validation items needed to fit a reranker
TREES, LEARNING_RATE, LEAVES = 100, 0.1, 15  # at most; scikit-learn stops early on a held-out 10%
BAG = 3  # such ensembles averaged, each stopped on its own random 10%: less variance
TUNE_QUERIES = 10_000  # validation items the scoring grid search uses at most
BIAS_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # tried on valid when the labels have learned biases


def fit_trees(X: np.ndarray, y: np.ndarray, seed: int) -> TreeEnsemble:
    """Boosted trees for P(y | X) (binary): `BAG` of scikit-learn's histogram gradient boosting
    ensembles (seeds seed, seed + 1, ...), averaged."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return TreeEnsemble.average([TreeEnsemble.from_sklearn(HistGradientBoostingClassifier(
        max_iter=TREES, learning_rate=LEARNING_RATE, max_leaf_nodes=LEAVES,
        random_state=seed + b).fit(X, y)) for b in range(BAG)])


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
    y = (pick(Y, np.maximum(cand.ids, 0)) > 0) & real
    fold = np.arange(n) % 2
    if any(len(np.unique(y[(fold == f)[:, None] & real])) < 2 for f in (0, 1)):
        return None, None, "skipped: a validation fold has no true (or no false) candidate"
    oof = np.zeros(cand.ids.shape, np.float32)
    for f in (0, 1):
        fit = (fold != f)[:, None] & real
        oof[fold == f] = Reranker(fit_trees(cand.features[fit], y[fit], seed)).score(
            cand.features[fold == f])
    scores, ids = ranked(oof, cand.ids, 20)
    score = objective(ids, Y, state.vocab.propensities())
    report = {"kept": score > plain, "out_of_fold": round(score, 4), "plain": round(plain, 4)}
    if score <= plain:
        return None, None, report
    return Reranker(fit_trees(cand.features[real], y[real], seed)), (scores, ids), report
