"""What one method of the peers benchmark produced, and choosing its setting on valid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metricls.data.dataset import Dataset
from metricls.evaluation import ranking_metrics

K = 10  # ranking depth every method predicts on valid and test


@dataclass
class Trial:
    """One setting of a method: its top-K label ids on valid and test, and its timings."""

    setting: dict[str, Any]
    valid_ids: np.ndarray  # (n_valid, K) int64, best first, -1 = padding
    test_ids: np.ndarray  # (n_test, K)
    train_s: float  # fitting on the train features
    predict_s: float  # predicting the test split from its features


@dataclass
class PeerRun:
    """One row of the benchmark: a method's test predictions and where its time went.

    `featurize_s` is the time to turn the test texts into the method's inputs (TF-IDF
    transform, frozen-encoder or embedding-network encoding); `predict_s` the time from those
    inputs to top-K label ids.
    """

    name: str
    description: str
    test_ids: np.ndarray  # (n_test, K) int64
    train_s: float
    featurize_s: float
    predict_s: float
    settings: dict[str, Any] = field(default_factory=dict)


def selection_score(ids: np.ndarray, data: Dataset) -> float:
    """P@1 + P@5 + PSP@5 on the valid split: the criterion metricls tunes its scoring on."""
    report = ranking_metrics(ids, data.valid.labels, data.vocab, ks=(1, 5))
    return report["P@1"] + report["P@5"] + report["PSP@5"]


def best_trial(trials: list[Trial], data: Dataset) -> tuple[Trial, dict[str, Any]]:
    """The trial with the highest `selection_score`, and a JSON record of the search."""
    scores = [selection_score(t.valid_ids, data) for t in trials]
    best = trials[int(np.argmax(scores))]
    record = {"chosen": best.setting, "criterion": "valid P@1 + P@5 + PSP@5",
              "grid": [{**t.setting, "valid_score": round(s, 4), "train_s": round(t.train_s, 2)}
                       for t, s in zip(trials, scores)]}
    return best, record
