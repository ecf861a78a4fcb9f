"""Turn neighbours into scored tags: prototype similarity blended with a kNN label vote."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import scipy.sparse as sp

from metricls.errors import ArtifactError
from metricls.formats import remedy
from metricls.validation import describe


@dataclass(frozen=True)
class Scoring:
    """How neighbour search results become label scores.

    score(l) = blend * (1 + s_l) / 2 + (1 - blend) * vote(l), where vote(l) is the
    softmax(similarity / temperature)-weighted share of the `knn` nearest training items that
    carry l, and s_l = cos(x, prototype_l) + bias_weight * label_bias[l] for the `candidates`
    most similar prototypes. Without label biases (the default) both parts lie in [0, 1].

    `label_bias` holds the per-label offsets learned with ``train.label_bias`` (empty: none);
    they re-rank the candidates that the prototype search returns by cosine alone.
    `tail_weight` orders the tags after the first `TAIL_FROM` by score / propensity^weight
    among the best `TAIL_DEPTH` (`with_tail`); 0: by score alone.

    `label_added` marks the labels made after training (`metricls.pipeline.labels`: added,
    or re-made by an update) with 1.0, trained labels with 0.0; the reranker scores them
    apart (`tag.reranked`). Empty: no label was made after training.
    """

    blend: float = 0.5
    knn: int = 30
    temperature: float = 0.05
    candidates: int = 100
    threshold: float | None = None
    label_thresholds: list[float] = field(default_factory=list)
    bias_weight: float = 1.0
    label_bias: list[float] = field(default_factory=list)
    label_added: list[float] = field(default_factory=list)
    tail_weight: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @functools.cached_property
    def bias_array(self) -> np.ndarray:
        """`label_bias` as a float32 array, made once per Scoring (it is frozen)."""
        return np.asarray(self.label_bias, dtype=np.float32)

    @functools.cached_property
    def added_mask(self) -> np.ndarray | None:
        """(L,) bool: the labels made after training; None when there is none."""
        mask = np.asarray(self.label_added, dtype=np.float32) > 0
        return mask if mask.any() else None

    @functools.cached_property
    def threshold_array(self) -> np.ndarray:
        """`label_thresholds` as a float32 array, made once per Scoring."""
        return np.asarray(self.label_thresholds, dtype=np.float32)

    @classmethod
    def from_dict(cls, d: dict, *, n_labels: int | None = None,
                  source: str = "scoring.json") -> Scoring:
        """The scoring of `to_dict`, read back from `source`: every key present and none other,
        blend in [0, 1], knn and candidates positive ints, temperature > 0, finite numbers, and
        per-label lists of 0 or `n_labels` values (any length without `n_labels`)."""
        fix = remedy(source)
        names = [f.name for f in fields(cls)]
        d = {"label_added": [], "tail_weight": 0.0, **d}  # absent from older folders
        unknown, missing = sorted(set(d) - set(names)), [k for k in names if k not in d]
        if unknown or missing:
            what = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
            raise ArtifactError(f"{source}: {what}, expected the keys {names}; {fix}")

        def bad(key: str, expected: str) -> ArtifactError:
            return ArtifactError(f"{source}: {key} is {describe(d[key])}, expected {expected}; "
                                 f"{fix}")

        for key in ("knn", "candidates"):
            if isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] < 1:
                raise bad(key, "a positive int")
        numbers = {"blend": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
                   "temperature": ("a number > 0", lambda v: v > 0),
                   "bias_weight": ("a finite number", lambda v: True),
                   "tail_weight": ("a number >= 0", lambda v: v >= 0)}
        for key, (expected, ok) in numbers.items():
            if not _finite(d[key]) or not ok(d[key]):
                raise bad(key, expected)
        if d["threshold"] is not None and not _finite(d["threshold"]):
            raise bad("threshold", "null or a finite number")
        for key in PER_LABEL:
            values = d[key]
            if not isinstance(values, list) or not all(_finite(v) for v in values):
                raise bad(key, "a list of finite numbers")
            if n_labels is not None and len(values) not in (0, n_labels):
                raise ArtifactError(f"{source}: {key} has {len(values)} values, expected 0 or "
                                    f"{n_labels} (one per label); {fix}")
        return cls(**d)


PER_LABEL = ("label_thresholds", "label_bias", "label_added")  # one value per label


def _finite(value: object) -> bool:
    """A JSON number (not a bool) that is neither NaN nor infinite (nor beyond a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def vote_matrix(nn_scores: np.ndarray, nn_ids: np.ndarray, item_labels: sp.csr_matrix,
                temperature: float) -> sp.csr_matrix:
    """(n, L) similarity-weighted label shares of each query's neighbours (-1 ids ignored)."""
    return vote_matrices([(nn_scores, nn_ids, temperature)], item_labels)


def vote_matrices(votes: Sequence[tuple[np.ndarray, np.ndarray, float]],
                  item_labels: sp.csr_matrix) -> sp.csr_matrix:
    """`vote_matrix` of each (nn_scores, nn_ids, temperature) of the same n queries, stacked:
    rows [v * n, (v + 1) * n) hold vote v. One sparse product serves them all.

    Each row's neighbours enter the product in ascending id order (the order in which the
    product sums them), so a vote is the same float whether made alone or with others."""
    weights, columns, widths = [], [], []
    for nn_scores, nn_ids, temperature in votes:
        n, k = nn_ids.shape
        w, ids = vote_weights(nn_scores, nn_ids, temperature)
        order = np.argsort(ids, axis=1, kind="stable")
        weights.append(np.take_along_axis(w, order, 1).ravel())
        columns.append(np.take_along_axis(ids, order, 1).ravel())
        widths.append(np.full(n, k, np.int64))
    indptr = np.zeros(sum(len(w) for w in widths) + 1, np.int64)
    np.cumsum(np.concatenate(widths), out=indptr[1:])
    W = sp.csr_matrix((np.concatenate(weights), np.concatenate(columns), indptr),
                      shape=(len(indptr) - 1, item_labels.shape[0]))
    return sp.csr_matrix(W @ item_labels)


def vote_weights(nn_scores: np.ndarray, nn_ids: np.ndarray,
                 temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) softmax weights of each query's neighbours at `temperature`, and their ids;
    padding (-1) gets weight 0 and id 0."""
    valid = nn_ids >= 0
    logits = np.where(valid, nn_scores / temperature, -np.inf)
    logits -= logits.max(axis=1, keepdims=True, initial=-1e30)
    weights = np.where(valid, np.exp(logits), 0.0)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return weights, np.where(valid, nn_ids, 0)


def with_label_bias(proto_scores: np.ndarray, proto_ids: np.ndarray,
                    scoring: Scoring) -> np.ndarray:
    """Prototype similarities plus ``bias_weight`` times each candidate label's learned bias
    (unchanged without biases; padding, id -1, stays as it is)."""
    if not scoring.label_bias or scoring.bias_weight == 0:
        return proto_scores
    shifted = proto_scores + scoring.bias_weight * scoring.bias_array[np.maximum(proto_ids, 0)]
    return np.where(proto_ids >= 0, shifted, proto_scores).astype(np.float32)


def prototype_matrix(proto_scores: np.ndarray, proto_ids: np.ndarray,
                     n_labels: int) -> sp.csr_matrix:
    """(n, L) sparse (1 + cos) / 2 of each query's candidate labels."""
    n, k = proto_ids.shape
    valid = proto_ids >= 0
    rows = np.repeat(np.arange(n), k)[valid.ravel()]
    vals = ((1.0 + proto_scores) / 2.0)[valid]
    return sp.csr_matrix((vals, (rows, proto_ids[valid])), shape=(n, n_labels))


def blend_scores(P: sp.csr_matrix, V: sp.csr_matrix, blend: float) -> sp.csr_matrix:
    """blend * P + (1 - blend) * V, both (n, L) sparse."""
    return sp.csr_matrix(blend * P + (1.0 - blend) * V)


TAIL_FROM, TAIL_DEPTH = 5, 50  # `Scoring.tail_weight`: the first 5 stay, the best 50 compete


def with_tail(scores: np.ndarray, ids: np.ndarray, weight: float, propensities: np.ndarray,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of a ranked list: its first `TAIL_FROM` as they are, then the rest
    by score / propensity^`weight` (rare labels rise; a propensity is the chance that a true
    label was annotated, `LabelVocab.propensities`). Scores stay the scores; -1 pads last."""
    if weight == 0 or ids.shape[1] <= TAIL_FROM:
        return scores[:, :k], ids[:, :k]
    rest_s, rest_i = scores[:, TAIL_FROM:], ids[:, TAIL_FROM:]
    boost = np.power(propensities[np.maximum(rest_i, 0)], -weight)
    key = np.where(rest_i >= 0, rest_s * boost, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")
    return (np.concatenate([scores[:, :TAIL_FROM], np.take_along_axis(rest_s, order, 1)],
                           1)[:, :k],
            np.concatenate([ids[:, :TAIL_FROM], np.take_along_axis(rest_i, order, 1)], 1)[:, :k])


def top_k(S: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` entries of each row of a sparse score matrix: (scores f32, ids i64), each (n, k).

    Rows with fewer than k stored entries are padded with score -inf and id -1.
    """
    S = sp.csr_matrix(S)
    S.sort_indices()
    n = S.shape[0]
    lengths = np.diff(S.indptr)
    width = max(int(lengths.max(initial=0)), k)
    dense_scores = np.full((n, width), -np.inf, dtype=np.float32)
    dense_ids = np.full((n, width), -1, dtype=np.int64)
    cols = np.arange(S.nnz) - np.repeat(S.indptr[:-1], lengths)
    rows = np.repeat(np.arange(n), lengths)
    dense_scores[rows, cols] = S.data
    dense_ids[rows, cols] = S.indices
    part = np.argpartition(-dense_scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(dense_scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    return (np.take_along_axis(dense_scores, best, axis=1),
            np.take_along_axis(dense_ids, best, axis=1))


def apply_thresholds(scores: np.ndarray, ids: np.ndarray, scoring: Scoring,
                     threshold: float | None) -> np.ndarray:
    """Boolean (n, k) mask of the tags to keep: `threshold`, else the tuned per-label ones."""
    found = ids >= 0  # padding (id -1) is never a tag
    if threshold is not None:
        return found & (scores >= threshold)
    if scoring.label_thresholds:
        return found & (scores >= scoring.threshold_array[np.maximum(ids, 0)])
    if scoring.threshold is not None:
        return found & (scores >= scoring.threshold)
    return found


def tune_global_threshold(scores: np.ndarray, ids: np.ndarray, Y: sp.csr_matrix) -> float:
    """The score threshold that maximises micro-F1 of the thresholded top-k on `Y`."""
    hits = _hits(ids, Y)
    order = np.argsort(-scores.ravel(), kind="stable")
    flat_scores, flat_hits = scores.ravel()[order], hits.ravel()[order]
    tp = np.cumsum(flat_hits)
    predicted = np.arange(1, len(order) + 1)
    f1 = 2 * tp / (predicted + Y.nnz)
    best = int(np.argmax(np.where(np.isfinite(flat_scores), f1, -1)))
    return float(flat_scores[best])


def tune_label_thresholds(scores: np.ndarray, ids: np.ndarray, Y: sp.csr_matrix,
                          fallback: float, min_support: int = 5) -> list[float]:
    """Per-label F1-optimal thresholds; labels with fewer than `min_support` positives in `Y`
    (or never retrieved) keep `fallback`."""
    hits = _hits(ids, Y).ravel()
    flat_ids, flat_scores = ids.ravel(), scores.ravel()
    support = np.asarray(Y.sum(axis=0)).ravel()
    out = np.full(Y.shape[1], fallback, dtype=np.float64)
    keep = flat_ids >= 0
    order = np.lexsort((-flat_scores[keep], flat_ids[keep]))
    lab, sc, hit = flat_ids[keep][order], flat_scores[keep][order], hits[keep][order]
    bounds = np.flatnonzero(np.diff(lab)) + 1
    for seg_lab, seg_sc, seg_hit in zip(np.split(lab, bounds), np.split(sc, bounds),
                                        np.split(hit, bounds)):
        label = int(seg_lab[0]) if len(seg_lab) else -1
        if label < 0 or support[label] < min_support:
            continue
        tp = np.cumsum(seg_hit)
        f1 = 2 * tp / (np.arange(1, len(seg_hit) + 1) + support[label])
        out[label] = float(seg_sc[int(np.argmax(f1))])
    return out.tolist()


def _hits(ids: np.ndarray, Y: sp.csr_matrix) -> np.ndarray:
    """(n, k) bool: ids[i, j] is a true label of row i."""
    Y = sp.csr_matrix(Y)
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    cols = np.clip(ids.ravel(), 0, Y.shape[1] - 1)
    found = np.asarray(Y[rows, cols]).ravel() > 0
    return (found & (ids.ravel() >= 0)).reshape(ids.shape)
