"""Class prototypes: one L2-normalised vector per label, from label vectors or mean embeddings."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from metricls.errors import InputError


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def mean_prototypes(embeddings: np.ndarray, Y: sp.csr_matrix,
                    chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Normalised mean embedding of each label's items, by streaming sparse products.

    Args:
        embeddings: (n, d) float32 item embeddings.
        Y: (n, L) CSR multi-hot labels of the same items.
        chunk: rows per sparse product, so memory stays O(L * d + chunk * d).

    Returns:
        (prototypes (L, d) float32 normalised, counts (L,) int64). A label with no item gets
        a zero vector.
    """
    if embeddings.shape[0] != Y.shape[0]:
        raise InputError(f"embeddings have {embeddings.shape[0]} rows but labels have {Y.shape[0]}")
    sums = np.zeros((Y.shape[1], embeddings.shape[1]), dtype=np.float32)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    for start in range(0, Y.shape[0], chunk):
        block = Y[start:start + chunk]
        sums += np.asarray(block.T @ embeddings[start:start + chunk], dtype=np.float32)
    counts = np.asarray(Y.sum(axis=0)).ravel().astype(np.int64)
    return normalize_rows(sums), counts
