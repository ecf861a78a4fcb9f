"""Class prototypes: one L2-normalised vector per label, from label vectors or mean embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from metricls.errors import InputError
from metricls.formats import LABEL_VECTORS_FORMAT, PROTOTYPES_FORMAT, check_array, read_tensors


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


def read_prototypes(path: Path, n_labels: int, dim: int) -> np.ndarray:
    """The (L, d) finite float32 prototypes of a ``prototypes.safetensors`` (and its (L,)
    integer counts), or ArtifactError naming the file."""
    tensors = read_tensors(path, PROTOTYPES_FORMAT)
    check_array(path, tensors, "counts", "i", (n_labels,))
    return check_array(path, tensors, "prototypes", "f4", (n_labels, dim), finite=True,
                       source="labels.json and encoder/config.json")


def read_label_vectors(path: Path, n_labels: int | None,
                       dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The learned (L, d) label vectors of a ``label_vectors.safetensors`` and its (L,) label
    biases (None when it has none), finite float32, or ArtifactError naming the file
    (`n_labels` None: any L)."""
    tensors = read_tensors(path, LABEL_VECTORS_FORMAT)
    vectors = check_array(path, tensors, "label_vectors", "f4", (n_labels, dim), finite=True,
                          source="labels.json and encoder/config.json")
    bias = None
    if "label_bias" in tensors:
        bias = check_array(path, tensors, "label_bias", "f", (len(vectors),), finite=True)
    return vectors, bias
