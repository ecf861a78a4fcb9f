"""Step 3 of tagging: the reranker, trees over each candidate's features giving P(true label).

Its trees are LightGBM's (`trees.py`), fitted on the validation split by `fit.py`; the
features are `FEATURES` of the `depth` best candidates by cosine (`features.py` makes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from metricls.artifacts import load_tensors
from metricls.errors import ArtifactError
from metricls.formats import RERANKER_FORMAT, check_array, check_format, remedy
from metricls.pipeline.trees import BoostedTrees

FEATURES = ("cosine", "log_count", "vote", "vote_wide", "log_rank", "gap_to_top", "top_cosine",
            "co_occurrence", "tfidf_cosine", "tfidf_log_rank")  # made by features.py
DEPTH = 20  # candidates (by cosine) the reranker scores per query, at least k
READS_FROM = 2  # the oldest major version of RERANKER_FORMAT read (1 held trees as arrays)


class Candidates(NamedTuple):
    """The labels a reranker scores for each query: ids (n, c) by cosine, -1 padding, and
    their features (n, c, len(FEATURES))."""

    ids: np.ndarray
    features: np.ndarray


@dataclass(frozen=True)
class Reranker:
    """Trees over `FEATURES` of the top `depth` candidates; `score` gives probabilities."""

    trees: BoostedTrees
    depth: int = DEPTH

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n, c) probabilities for (n, c, len(FEATURES)) candidate features."""
        n, c, f = features.shape
        z = self.trees.logits(features.reshape(n * c, f)).reshape(n, c)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The trees' LightGBM model text as UTF-8 bytes, and the candidate depth."""
        text = np.frombuffer(self.trees.to_text().encode(), np.uint8).copy()
        return {"model": text, "candidates": np.array([self.depth], np.int64)}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], source: str) -> Reranker:
        model = check_array(source, t, "model", "i", (None,))
        if model.dtype != np.uint8:
            raise ArtifactError(f"{source}: 'model' is {model.dtype}, expected uint8 (the "
                                f"LightGBM model text); {remedy(source)}")
        try:
            text = bytes(model).decode()
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"{source}: 'model' is not UTF-8 ({exc}); "
                                f"{remedy(source)}") from None
        depth = int(check_array(source, t, "candidates", "i", (1,))[0])
        if depth < 1:
            raise ArtifactError(f"{source}: a reranker of {depth} candidates, expected >= 1; "
                                f"{remedy(source)}")
        return cls(BoostedTrees.from_text(text, source, len(FEATURES)), depth)

    @classmethod
    def load(cls, path: Path) -> Reranker:
        """Read a reranker file written with `RERANKER_FORMAT` and `FEATURES` in its metadata
        (the trees of an older format: rebuild the index)."""
        tensors, meta = load_tensors(path)
        if check_format(path, meta.get("format"), RERANKER_FORMAT) < READS_FROM:
            raise ArtifactError(f"{path}: trees of an older metricls (format "
                                f"{meta.get('format')!r}, this one reads {RERANKER_FORMAT!r}); "
                                f"{remedy(path)}")
        if meta.get("features") != ",".join(FEATURES):
            raise ArtifactError(f"{path}: trees over the features {meta.get('features')!r}, "
                                f"expected {','.join(FEATURES)!r}; {remedy(path)}")
        return cls.from_tensors(tensors, str(path))

    def top_k(self, cand: Candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most probable candidates per query: (scores f32, ids i64), -inf / -1 padding."""
        return ranked(self.score(cand.features), cand.ids, k)


def ranked(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row's candidates by score (padding, id -1, last) and keep k, padding to k."""
    scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return padded(np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1), k)


def padded(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) widened to k columns with -inf / -1 (as they are when wide enough)."""
    if scores.shape[1] >= k:
        return scores, ids
    pad = ((0, 0), (0, k - scores.shape[1]))
    return (np.pad(scores, pad, constant_values=-np.inf),
            np.pad(ids, pad, constant_values=-1))


