"""Generated multi-label data of any size for the scale benchmark, written in chunks.

`labels` labels with power-law frequencies (label l drawn with probability ~ (l + 1) ** -alpha),
1 to `MAX_LABELS` distinct labels per item, and `dim`-d features = the sum of the item's labels'
random unit centres plus Gaussian noise: ``features.npy`` (the config's `data.features_path`)
beside ``items.jsonl``, which holds only ids and labels (and a split, if asked).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from metricls.artifacts import write_npy
from metricls.prototypes import normalize_rows

CHUNK = 65_536  # items generated at a time
MAX_LABELS = 4  # labels per item: 1 to this many, uniformly
NOISE = 0.3  # per-dimension standard deviation of the feature noise (label centres: norm 1)


def label_probabilities(n_labels: int, alpha: float = 1.0) -> np.ndarray:
    """(L,) float64 power-law probabilities, p(l) ~ (l + 1) ** -alpha (0: uniform)."""
    weights = np.arange(1, n_labels + 1, dtype=np.float64) ** -alpha
    return weights / weights.sum()


def draw_labels(rng: np.random.Generator, n_items: int, probs: np.ndarray) -> sp.csr_matrix:
    """(n_items, L) float32 CSR multi-hot: 1 to `MAX_LABELS` distinct labels per item."""
    counts = rng.integers(1, MAX_LABELS + 1, size=n_items)
    cols = rng.choice(len(probs), size=int(counts.sum()), p=probs)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    Y = sp.csr_matrix((np.ones(len(cols), np.float32), cols, indptr), shape=(n_items, len(probs)))
    Y.sum_duplicates()
    Y.data[:] = 1.0
    return Y


def generate_data(folder: Path, *, n_items: int, n_labels: int, dim: int, alpha: float = 1.0,
                  splits: Sequence[float] | None = None, seed: int = 0) -> dict[str, Any]:
    """Write ``items.jsonl`` (id, labels) and ``features.npy`` (n_items, dim) into `folder`.

    With `splits` = (train, valid) shares, each item also gets a random ``split`` (the rest
    "test"); without, the config's md5 split applies. Memory stays O(CHUNK * dim + n_labels *
    dim); each file is written under a temporary name and renamed when complete.
    """
    rng = np.random.default_rng(seed)
    centres = normalize_rows(rng.standard_normal((n_labels, dim), dtype=np.float32))  # (L, d)
    probs = label_probabilities(n_labels, alpha)
    counts = np.zeros(n_labels, dtype=np.int64)
    table, tmp = folder / "items.jsonl", folder / f".items.jsonl.tmp-{os.getpid()}"

    def fill(features: np.ndarray) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for start in range(0, n_items, CHUNK):
                Y = draw_labels(rng, min(CHUNK, n_items - start), probs)
                noise = rng.standard_normal((Y.shape[0], dim), dtype=np.float32)
                features[start:start + Y.shape[0]] = Y @ centres + NOISE * noise
                counts[:] += np.bincount(Y.indices, minlength=n_labels)
                split = _draw_splits(rng, Y.shape[0], splits)
                fh.writelines(_line(start + i, Y.indices[Y.indptr[i]:Y.indptr[i + 1]], split[i])
                              for i in range(Y.shape[0]))

    write_npy(folder / "features.npy", (n_items, dim), np.float32, fill)
    os.replace(tmp, table)
    return {"n_items": n_items, "labels_used": int((counts > 0).sum()),
            "items_per_label": {"max": int(counts.max()), "median": float(np.median(counts)),
                                "min": int(counts.min())},
            "features_mb": round((folder / "features.npy").stat().st_size / 2**20, 1),
            "table_mb": round(table.stat().st_size / 2**20, 1)}


def _draw_splits(rng: np.random.Generator, n: int, splits: Sequence[float] | None) -> list:
    if splits is None:
        return [None] * n
    u = rng.random(n)
    return np.where(u < splits[0], "train", np.where(u < sum(splits), "valid", "test")).tolist()


def _line(i: int, labels: np.ndarray, split: str | None) -> str:
    names = ",".join(f'"l{label}"' for label in labels)
    extra = f',"split":"{split}"' if split else ""
    return f'{{"id":"i{i}","labels":[{names}]{extra}}}\n'
