"""Why a tag: the evidence behind each of a text's top-k tags.

`explain` scores exactly as `tag.score` does (same search, same scores, same order) and then
collects, per tag:

- ``neighbours``: the nearest indexed items that carry the label (by the data's ids), among
  the text's `NEAREST` nearest items, with their cosine similarity to the text;
- ``terms``: the words the text shares with the label's TF-IDF prototype, heaviest shared
  weight first, down to `TERM_SHARE` of the heaviest (so "the" and "for" rarely make it;
  text taggers with TF-IDF prototypes, else empty);
- ``similarity``: the text's cosine to the label's prototype;
- ``vote``: the label's share of the neighbour vote (`Scoring.knn`, `Scoring.temperature`);
- ``features``: with a reranker, the candidate features it read (`rerank.FEATURES`); the
  score is then its probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from metricls.pipeline.features import pick
from metricls.pipeline.rerank import FEATURES, Candidates
from metricls.pipeline.scoring import vote_matrix
from metricls.pipeline.search import Neighbours
from metricls.pipeline.state import TaggerState
from metricls.pipeline.tag import SCORE_BATCH, neighbours, scored

NEAREST = 200  # items searched for the neighbours that carry a tag
TERMS = 5  # shared terms listed per tag
TERM_SHARE = 0.25  # of the heaviest shared term's weight, that a listed term has at least


def explain(state: TaggerState, emb: np.ndarray, k: int, texts: Sequence[str] | None = None,
            *, per_tag: int = 3) -> list[list[dict]]:
    """Per embedding (and its text), one dict per top-k tag, best first (see the module doc);
    at most `per_tag` neighbours and `TERMS` terms per tag."""
    out: list[list[dict]] = []
    for s in range(0, len(emb), SCORE_BATCH):
        part = None if texts is None else texts[s:s + SCORE_BATCH]
        out += _explain_batch(state, emb[s:s + SCORE_BATCH], k, part, per_tag)
    return out


def _explain_batch(state: TaggerState, emb: np.ndarray, k: int, texts: Sequence[str] | None,
                   per_tag: int) -> list[list[dict]]:
    found = neighbours(state, emb, k, texts)
    scores, ids, cand = scored(state, found, k, state.scoring)
    safe = np.maximum(ids, 0)
    similarity = np.einsum("nd,nkd->nk", emb, state.prototypes[safe])
    features = None if cand is None else _features(cand, ids)
    vote = _votes(state, found, ids, features)
    near_scores, near_ids = state.item_index.search(emb, min(NEAREST, state.item_index.ntotal))
    words = _shared_terms(state, texts, ids)
    out = []
    for i in range(len(emb)):
        carried = state.item_labels[np.maximum(near_ids[i], 0)]  # (NEAREST, L) labels
        tags = []
        for j in np.flatnonzero(ids[i] >= 0):
            label = int(ids[i, j])
            has = (np.asarray(carried[:, label].todense()).ravel() > 0) & (near_ids[i] >= 0)
            cited = np.flatnonzero(has)[:per_tag]
            tag = {"label": state.vocab.names[label], "score": float(scores[i, j]),
                   "description": state.descriptions.get(state.vocab.names[label]),
                   "neighbours": [{"id": _item_id(state, int(near_ids[i, r])),
                                   "similarity": float(near_scores[i, r])} for r in cited],
                   "terms": words[i][j] if words else [],
                   "similarity": float(similarity[i, j]), "vote": float(vote[i, j])}
            if features is not None:
                tag["features"] = dict(zip(FEATURES, map(float, features[i, j])))
            tags.append(tag)
        out.append(tags)
    return out


def _votes(state: TaggerState, found: Neighbours, ids: np.ndarray,
           features: np.ndarray | None) -> np.ndarray:
    """(n, k) each tag's share of the neighbour vote, as its score read it: the reranker's
    "vote" feature (a trained label's without the labels added since), else the blend's."""
    if features is not None:
        return features[..., FEATURES.index("vote")]
    s = state.scoring
    knn = min(s.knn, found.item_ids.shape[1])
    if knn == 0:
        return np.zeros(ids.shape, np.float32)
    return pick(vote_matrix(found.item_scores[:, :knn], found.item_ids[:, :knn],
                            state.item_labels, s.temperature), np.maximum(ids, 0))


def _features(cand: Candidates, ids: np.ndarray) -> np.ndarray:
    """(n, k, F) the reranker's features of each chosen label, from the candidates it
    scored (the first column holding the label: a trained label's own features)."""
    out = np.zeros((*ids.shape, len(FEATURES)), np.float32)
    for i, j in zip(*np.nonzero(ids >= 0)):
        out[i, j] = cand.features[i, np.flatnonzero(cand.ids[i] == ids[i, j])[0]]
    return out


def _shared_terms(state: TaggerState, texts: Sequence[str] | None,
                  ids: np.ndarray) -> list[list[list[str]]] | None:
    """Per text and tag, the `TERMS` words of the text with the largest product of its
    TF-IDF weight and the label prototype's (None without TF-IDF prototypes or texts)."""
    if state.tfidf is None or texts is None:
        return None
    X, C, terms = state.tfidf.vectors(texts), state.tfidf.centroids, state.tfidf.terms
    out = []
    for i in range(len(texts)):
        x = X[i]
        row = []
        for label in ids[i]:
            if label < 0:
                row.append([])
                continue
            shared = sp.csr_matrix(x.multiply(C[int(label)]))
            order = np.argsort(-shared.data, kind="stable")[:TERMS]
            heavy = shared.data[order] >= TERM_SHARE * shared.data[order[0]] if len(order) else []
            row.append([terms[t] for t in shared.indices[order][heavy]])
        out.append(row)
    return out


def _item_id(state: TaggerState, row: int) -> str:
    """An indexed item's id (its row as "#ROW" for a tagger saved without ids)."""
    return state.item_ids[row] if state.item_ids is not None else f"#{row}"
