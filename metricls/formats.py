"""The binary files of a tagger folder: their format tags, and the checks of what they hold.

Every safetensors file carries a ``format`` tag (``metricls-<kind>/<major>``) written from the
constants below and checked when the file is read. Every array read from a folder is checked
here before numpy, scipy or FAISS index with it: the manifest's checksums catch corruption,
not a crafted file whose manifest was re-signed, and an out-of-range index would crash the
process in C rather than raise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from metricls import artifacts
from metricls.errors import ArtifactError
from metricls.manifest import MANIFEST, remedy_for

PROTOTYPES_FORMAT = "metricls-prototypes/1"
CSR_FORMAT = "metricls-csr/1"
RERANKER_FORMAT = "metricls-reranker/2"  # /1: trees as arrays, before LightGBM
TFIDF_FORMAT = "metricls-tfidf/1"
FROZEN_ITEMS_FORMAT = "metricls-frozen-items/1"
ENCODER_FORMAT = "metricls-encoder/1"
LABEL_VECTORS_FORMAT = "metricls-label-vectors/1"

_KINDS = {"i": "integer", "f": "float", "f4": "float32", "f2": "float16"}
_EXACT = {"f4": np.float32, "f2": np.float16}


def remedy(path: str | Path) -> str:
    """How to repair a bad file: rebuild the tagger folder holding it, or retrain when
    build-index reads the file (as `metricls verify` says)."""
    path = Path(path)
    for folder in path.parents[:3]:
        if (folder / MANIFEST).is_file():
            return remedy_for(folder, path.relative_to(folder).as_posix())
    return "rebuild the tagger with `metricls build-index FOLDER`"


def check_format(path: str | Path, found: Any, expected: str) -> int:
    """Refuse a file whose format tag is missing, of another kind, or of a newer major version
    than `expected` (e.g. ``metricls-prototypes/1``); returns the file's major version."""
    kind, _, major = expected.partition("/")
    name, _, version = str(found).partition("/")
    version = version.split(".")[0]
    if not isinstance(found, str) or name != kind or not version.isdigit():
        tag = "no format tag" if found is None else f"format tag {found!r}"
        raise ArtifactError(f"{path}: {tag}, expected {expected!r}; {remedy(path)}")
    if int(version) > int(major):
        raise ArtifactError(f"{path}: format {found!r} was written by a newer metricls (this one "
                            f"reads {expected!r}); upgrade metricls")
    return int(version)


def read_tensors(path: str | Path, expected: str) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file whose format tag is `expected` (see `check_format`)."""
    return read_tensors_and_meta(path, expected)[0]


def read_tensors_and_meta(path: str | Path,
                          expected: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`read_tensors`, with the file's string metadata."""
    tensors, meta = artifacts.load_tensors(path)
    check_format(path, meta.get("format"), expected)
    return tensors, meta


def check_array(path: str | Path, tensors: dict[str, np.ndarray], key: str, kind: str,
                shape: tuple[int | None, ...], *, finite: bool = False,
                source: str = "") -> np.ndarray:
    """``tensors[key]``, refused unless its dtype is of `kind` ("i" integer, "f" float, "f4"
    float32, "f2" float16), its shape is `shape` (None: any length; `source` says where it
    comes from) and, with `finite`, it holds no NaN or inf."""
    where = f"{path}: {key!r}"
    if key not in tensors:
        raise ArtifactError(f"{where} missing, expected a {_KINDS[kind]} array; "
                            f"{remedy(path)}")
    array = tensors[key]
    found_kind = "i" if array.dtype.kind in "iu" else array.dtype.kind
    if kind in _EXACT and array.dtype == _EXACT[kind]:
        found_kind = kind
    wanted = "(" + ", ".join("n" if s is None else str(s) for s in shape) + \
        ("," if len(shape) == 1 else "") + ")"
    if found_kind != kind or array.ndim != len(shape) or any(
            s is not None and s != f for s, f in zip(shape, array.shape)):
        raise ArtifactError(f"{where} is {array.dtype} of shape {array.shape}, expected "
                            f"{_KINDS[kind]} of shape {wanted}"
                            f"{f' (from {source})' if source else ''}; {remedy(path)}")
    if finite and not np.isfinite(array).all():
        raise ArtifactError(f"{where} holds {int((~np.isfinite(array)).sum())} NaN or infinite "
                            f"values, expected finite ones; {remedy(path)}")
    return array


def check_csr(path: str | Path, tensors: dict[str, np.ndarray],
              shape: tuple[int | None, int | None], *, data: bool, source: str) -> sp.csr_matrix:
    """The CSR matrix stored as `indptr`, `indices`, `shape` (and `data` when `data`, else all
    ones), refused unless `shape` is two non-negative ints agreeing with the expected `shape`
    (None: any; `source` says where it comes from), `indptr` has n_rows + 1 entries from 0 up
    to len(indices) without decreasing, every index lies in [0, n_cols), and the data are
    finite floats. The one check of every CSR matrix read from a tagger folder."""
    dims = check_array(path, tensors, "shape", "i", (2,))
    n_rows, n_cols = (int(v) for v in dims)
    if n_rows < 0 or n_cols < 0 or any(e is not None and e != f
                                       for e, f in zip(shape, (n_rows, n_cols))):
        wanted = tuple("n" if e is None else e for e in shape)
        raise ArtifactError(f"{path}: 'shape' is {(n_rows, n_cols)}, expected "
                            f"{wanted} ({source}); {remedy(path)}")
    indices = check_array(path, tensors, "indices", "i", (None,))
    indptr = check_array(path, tensors, "indptr", "i", (n_rows + 1,))
    decreases = bool((indptr[1:] < indptr[:-1]).any())  # not np.diff: unsigned would wrap
    if indptr[0] != 0 or indptr[-1] != len(indices) or decreases:
        raise ArtifactError(f"{path}: 'indptr' runs from {int(indptr[0])} to {int(indptr[-1])}"
                            f"{' and decreases' if decreases else ''}, "
                            f"expected non-decreasing from 0 to {len(indices)} (the number of "
                            f"indices); {remedy(path)}")
    if indices.size and (indices.min() < 0 or indices.max() >= n_cols):
        raise ArtifactError(f"{path}: 'indices' span [{int(indices.min())}, "
                            f"{int(indices.max())}], expected within [0, {n_cols}); "
                            f"{remedy(path)}")
    values = (check_array(path, tensors, "data", "f", (len(indices),), finite=True) if data
              else np.ones(len(indices), np.float32))
    return sp.csr_matrix((values, indices.astype(np.int64), indptr.astype(np.int64)),
                         shape=(n_rows, n_cols))
