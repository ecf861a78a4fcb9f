"""The numbers behind the evaluation report beyond the metrics: per-label recall tables, label
frequency buckets, often-swapped label pairs and a 2-D map of the embeddings (numpy only)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from metricls.errors import InputError

BUCKETS = ("head", "torso", "tail")


class Groups(NamedTuple):
    """Items grouped for colouring: group names, most common first, and each item's group."""

    title: str  # what the groups are, e.g. "facet role"
    names: list[str]  # label names
    of_item: np.ndarray  # (n,) int64 group index, -1 = in none of them


def label_rows(names: Sequence[str], support: np.ndarray, found: np.ndarray,
               train_counts: np.ndarray) -> list[dict]:
    """One row per label with test items: name, test items, train items, recall@k.

    Args:
        names: names of the truth columns (vocabulary, then unknown labels).
        support: (L,) test items per column; found: (L,) of those ranking it in the top k.
        train_counts: (L_vocab,) training items per vocabulary label (unknown labels: 0).
    """
    counts = np.zeros(len(names), dtype=np.int64)
    counts[:len(train_counts)] = train_counts
    return [{"label": names[j], "test_items": int(support[j]), "train_items": int(counts[j]),
             "recall": float(found[j] / support[j])} for j in np.flatnonzero(support)]


def worst_and_best(rows: list[dict], *, min_support: int, top: int) -> tuple[list, list]:
    """The `top` labels of lowest and of highest recall among those with >= min_support items."""
    kept = [row for row in rows if row["test_items"] >= min_support]
    by_recall = sorted(kept, key=lambda row: (row["recall"], -row["test_items"], row["label"]))
    best = sorted(kept, key=lambda row: (-row["recall"], -row["test_items"], row["label"]))
    return by_recall[:top], best[:top]


def frequency_buckets(train_counts: np.ndarray, support: np.ndarray,
                      found: np.ndarray) -> list[dict]:
    """Recall@k of the head, torso and tail thirds of the vocabulary by training count.

    Labels are ranked by training count (ties by id) and cut into three groups of equal size.
    Each bucket gives micro recall (found / test assignments) and macro recall (mean over its
    labels with test items); unknown labels (columns past the vocabulary) form a last bucket.
    """
    n_vocab = len(train_counts)
    order = np.argsort(-np.asarray(train_counts), kind="stable")
    parts = [(name, ids) for name, ids in zip(BUCKETS, np.array_split(order, 3)) if len(ids)]
    if len(support) > n_vocab:
        parts.append(("unknown to the tagger", np.arange(n_vocab, len(support))))
    buckets = []
    for name, ids in parts:
        s, f = support[ids], found[ids]
        counts = train_counts[ids[ids < n_vocab]]
        buckets.append({
            "bucket": name, "labels": len(ids), "labels_in_test": int((s > 0).sum()),
            "train_items_min": int(counts.min()) if len(counts) else 0,
            "train_items_max": int(counts.max()) if len(counts) else 0,
            "test_assignments": int(s.sum()), "found": int(f.sum()),
            "micro_recall": float(f.sum() / s.sum()) if s.sum() else 0.0,
            "macro_recall": float(np.mean(f[s > 0] / s[s > 0])) if (s > 0).any() else 0.0})
    return buckets


def swapped_pairs(ids: np.ndarray, Y: sp.csr_matrix, names: Sequence[str], *,
                  top: int = 20, side: int = 12) -> dict:
    """Pairs (true label missed, wrong label predicted in its place), counted in items.

    For each item the first n predictions are read, n = its number of true labels (at most
    the ranking depth): every true label absent from them pairs with every wrong label among
    them. Returns the `top` pairs and a heatmap of the `side` most involved labels per axis.
    """
    pairs: Counter[tuple[int, int]] = Counter()
    for row in range(Y.shape[0]):
        truth = set(Y.indices[Y.indptr[row]:Y.indptr[row + 1]].tolist())
        shown = [j for j in ids[row, :min(len(truth), ids.shape[1])].tolist() if j >= 0]
        wrong = [j for j in shown if j not in truth]
        missed = sorted(truth.difference(shown))
        pairs.update((m, w) for m in missed for w in wrong)
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    rows_total: Counter[int] = Counter()
    cols_total: Counter[int] = Counter()
    for (m, w), n in ranked:
        rows_total[m] += n
        cols_total[w] += n
    rows = [j for j, _ in sorted(rows_total.items(), key=lambda kv: (-kv[1], kv[0]))[:side]]
    cols = [j for j, _ in sorted(cols_total.items(), key=lambda kv: (-kv[1], kv[0]))[:side]]
    counts = [[pairs.get((m, w), 0) for w in cols] for m in rows]
    return {"pairs": [{"missed": names[m], "predicted": names[w], "items": n}
                      for (m, w), n in ranked[:top]],
            "n_pairs": len(pairs), "heatmap": {"missed": [names[j] for j in rows],
                                              "predicted": [names[j] for j in cols],
                                              "items": counts}}


def colour_groups(label_lists: list[list[str]], *, facet: str | None = None,
                  max_groups: int = 8) -> Groups:
    """Group items by their value of a `facet::value` facet, else by their most frequent label.

    Args:
        label_lists: each item's labels.
        facet: the facet to colour by; default: the facet with the most items carrying
            exactly one of its values, not counting its most common value (the most
            informative split), or None when no label has the `facet::value` form.
        max_groups: the most common values (or labels) kept; other items are in no group.
    """
    facet = facet if facet is not None else _best_facet(label_lists)
    values, title = label_lists, "most frequent labels"
    if facet is not None:
        prefix = f"{facet}::"
        values = [[label for label in row if label.startswith(prefix)] for row in label_lists]
        title = f"facet {facet}"
    counts = Counter(chain.from_iterable(values))
    if facet is not None and not counts:
        known = sorted({label.split("::")[0] for label in chain(*label_lists) if "::" in label})
        raise InputError(f"--facet: no label of the form '{facet}::value' in these items; "
                         f"facets found: {known or 'none'}")
    names = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    rank = {name: i for i, name in enumerate(names[:max_groups])}
    of_item = [min((rank[v] for v in row if v in rank), default=-1) for row in values]
    return Groups(title, names[:max_groups], np.array(of_item, dtype=np.int64))


def _best_facet(label_lists: list[list[str]]) -> str | None:
    single: dict[str, Counter[str]] = {}
    for row in label_lists:
        per_facet: dict[str, list[str]] = {}
        for label in row:
            if "::" in label:
                per_facet.setdefault(label.split("::")[0], []).append(label)
        for name, found in per_facet.items():
            if len(found) == 1:
                single.setdefault(name, Counter())[found[0]] += 1
    score = {name: c.total() - max(c.values()) for name, c in single.items()}
    return min(score, key=lambda name: (-score[name], name)) if score else None


def pca_2d(X: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Project (n, d) `X` and (m, d) `others` on the first two principal axes of `X`.

    The axes come from numpy's SVD of the centred `X`; each axis's sign is fixed so that its
    largest loading is positive (stable pictures from run to run).

    Returns:
        (n, 2) and (m, 2) float32 coordinates, and the share of `X`'s variance per axis.
    """
    mean = X.mean(axis=0, dtype=np.float64)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    axes = np.zeros((2, X.shape[1]))
    axes[:min(2, len(vt))] = vt[:2]
    axes *= np.where(axes[np.arange(2), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    total = float((s ** 2).sum())
    shares = [float(v ** 2 / total) if total else 0.0 for v in s[:2]]
    shares += [0.0] * (2 - len(shares))
    return ((X - mean) @ axes.T).astype(np.float32), ((others - mean) @ axes.T).astype(
        np.float32), shares
