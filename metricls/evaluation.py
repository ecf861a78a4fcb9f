"""evaluate: P@k, R@k, nDCG@k, PSP@k of a tagger on labelled items, with stage timings."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from metricls.data.items import Items
from metricls.data.labels import LabelVocab
from metricls.errors import InputError
from metricls.metrics import ranking_report
from metricls.pipeline.tag import SCORE_BATCH, score
from metricls.progress import progress
from metricls.tagger import Tagger

log = logging.getLogger(__name__)
REPORT_KEYS = ("P@1", "P@3", "P@5", "R@5", "R@10", "nDCG@5", "PSP@5", "macro_R@10")
# items per tagging batch: a multiple of EmbeddingModel.embed_prepared's batch (2048) and of
# MiniLM's encoding chunk (16 x 64), so batched results equal one call on all items


class Tagged(NamedTuple):
    """What a tagger found for items: top-k label ids, embeddings (if kept), seconds per stage."""

    ids: np.ndarray  # (n, k) int64, best first, -1 = padding
    embeddings: np.ndarray | None  # (n, d) float32
    timings: dict[str, float]


def ranking_metrics(ids: np.ndarray, label_lists: list[list[str]], vocab: LabelVocab, *,
                    ks: Sequence[int] = (1, 3, 5, 10)) -> dict:
    """Ranking metrics at each k of `ks` of predicted label ids against label lists.

    Labels unknown to `vocab` are misses.
    """
    Y, unknown = vocab.to_csr(label_lists, extend_unknown=True)
    report = ranking_report(ids, Y, propensities=vocab.propensities(n_extra=len(unknown)), ks=ks)
    report.update({"n_items": len(label_lists), "n_unknown_labels": len(unknown),
                   "n_unknown_assignments": int(Y[:, len(vocab):].nnz) if unknown else 0})
    return report


def check_labelled(items: Items, column: str) -> None:
    """Refuse items of which none has a label (every metric would be 0); warn when some lack
    labels (they count as misses)."""
    unlabelled = len(items) if items.labels is None else sum(not row for row in items.labels)
    if unlabelled == len(items):
        raise InputError(f"{items.source}: no item has labels; evaluate needs labelled items "
                         f"(column {column!r})")
    if unlabelled:
        log.warning("%s: %d of %d items have no labels (column %r); they lower P@k and are "
                    "left out of R@k and nDCG@k",
                    items.source, unlabelled, len(items), column)


def tag_items(tagger: Tagger, items: Items, *, k: int = 10, cache: bool = False,
              keep_embeddings: bool = False) -> Tagged:
    """Top-`k` label ids of `items`, in batches under a progress bar, timing each stage.

    Embeds, then tags through the pipeline's one entry point (`pipeline.tag.score`, as
    `Tagger.predict` does) on one snapshot of the tagger. Timings are seconds spent embedding
    (encoding included) and searching and scoring.
    """
    timings = dict.fromkeys(("embed_s", "search_score_s"), 0.0)
    state, ids, embeddings = tagger.state, [], []
    starts = range(0, len(items), SCORE_BATCH)
    for start in progress(starts, desc="tag", total=len(starts)):
        batch = items.subset(np.arange(start, min(start + SCORE_BATCH, len(items))))
        t0 = time.perf_counter()
        emb = tagger.model.embed(batch.texts, batch.features, cache=cache)
        t1 = time.perf_counter()
        ids.append(score(state, emb, k, batch.texts)[1])
        timings["embed_s"] += t1 - t0
        timings["search_score_s"] += time.perf_counter() - t1
        if keep_embeddings:
            embeddings.append(emb)
    return Tagged(np.concatenate(ids) if ids else np.zeros((0, k), np.int64),
                  np.concatenate(embeddings) if keep_embeddings else None, timings)


def evaluate_tagged(tagger: Tagger, items: Items, *, k: int = 10, cache: bool = False,
                    keep_embeddings: bool = False) -> tuple[dict, Tagged]:
    """`evaluate`, also returning what the tagger found (see `tag_items`)."""
    if len(items) == 0:
        raise InputError(f"{items.source}: no items to evaluate in this split")
    check_labelled(items, tagger.config.data.label_column)
    start = time.perf_counter()
    tagged = tag_items(tagger, items, k=k, cache=cache, keep_embeddings=keep_embeddings)
    total = time.perf_counter() - start
    report = ranking_metrics(tagged.ids, items.labels, tagger.vocab)
    t = tagged.timings
    report["timings"] = {**{key: round(v, 4) for key, v in t.items()},
                         "total_s": round(total, 4), "items_per_s": round(len(items) / total, 1),
                         "cached_encoding": cache}
    return report, tagged


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
        (seconds per stage: ``embed_s``, ``search_score_s``, ``total_s``, and items/s end to
        end, encoding included).
    """
    return evaluate_tagged(tagger, items, k=k, cache=cache)[0]


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

