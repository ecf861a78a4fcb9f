"""evaluate: P@k, R@k, nDCG@k, PSP@k of a tagger on labelled items, with stage timings."""

from __future__ import annotations

import time

import numpy as np

from metricls.data.items import Items
from metricls.data.labels import LabelVocab
from metricls.errors import InputError
from metricls.metrics import ranking_report
from metricls.tagger import Tagger

REPORT_KEYS = ("P@1", "P@3", "P@5", "R@5", "R@10", "nDCG@5", "PSP@5", "macro_R@10")


def ranking_metrics(ids: np.ndarray, label_lists: list[list[str]], vocab: LabelVocab) -> dict:
    """Ranking metrics of predicted label ids against label lists; unknown labels are misses."""
    Y, unknown = vocab.to_csr(label_lists, extend_unknown=True)
    report = ranking_report(ids, Y, propensities=vocab.propensities(n_extra=len(unknown)))
    report.update({"n_items": len(label_lists), "n_unknown_labels": len(unknown),
                   "n_unknown_assignments": int(Y[:, len(vocab):].nnz) if unknown else 0})
    return report


def evaluate(tagger: Tagger, items: Items, *, k: int = 10, cache: bool = False) -> dict:
    """Evaluate `tagger` on `items` (which must carry labels).

    Labels unknown to the tagger count as misses (extra truth columns that are never
    predicted); the report says how many there were.

    Args:
        tagger: the tagger.
        items: labelled items.
        k: depth of the ranking.
        cache: reuse cached frozen-backbone embeddings (timings then exclude that encoding).

    Returns:
        A dict with the metric keys of `REPORT_KEYS` (and more), ``n_items``,
        ``n_unknown_labels`` (distinct), ``n_unknown_assignments`` and ``timings``
        (seconds per stage and items/s end to end, encoding included).
    """
    if items.labels is None:
        raise InputError(f"{items.source}: evaluation needs a label column")
    if len(items) == 0:
        raise InputError(f"{items.source}: no items to evaluate in this split")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    _, ids = tagger._predict(items, k, timings, cache=cache)
    total = time.perf_counter() - start
    report = ranking_metrics(ids, items.labels, tagger.vocab)
    report["timings"] = {**{key: round(v, 4) for key, v in timings.items()},
                         "total_s": round(total, 4), "items_per_s": round(len(items) / total, 1),
                         "cached_encoding": cache}
    return report


def format_table(reports: dict[str, dict]) -> str:
    """A plain-text table: one row per named report, one column per metric."""
    head = f"{'':<22}" + "".join(f"{key:>11}" for key in REPORT_KEYS) + f"{'items/s':>11}"
    lines = [head]
    for name, rep in reports.items():
        vals = "".join(f"{rep[key]:>11.4f}" for key in REPORT_KEYS)
        lines.append(f"{name:<22}{vals}{rep['timings']['items_per_s']:>11.1f}")
    return "\n".join(lines)


def summarize(report: dict) -> dict:
    """The metric keys only, rounded, for manifests and model cards."""
    return {key: round(float(report[key]), 4) for key in REPORT_KEYS} | {
        "n_items": int(report["n_items"])}

