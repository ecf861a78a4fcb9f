"""AnnIndex: the interface of every ANN backend, and the input checks they share.

Vectors are L2-normalised float32 rows (the caller normalises) and the metric is the inner
product. Ids are row positions: `build` numbers its rows 0..n-1 and `add` continues from there.
Every input is validated here, before it reaches FAISS or ScaNN.
"""

from __future__ import annotations

import abc
import copy
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from metricls.errors import ArtifactError, InputError, NotFittedError
from metricls.formats import remedy
from metricls.validation import check_positive_int, describe

META_FILE = "backend.json"
META_KEYS = ("backend", "metric", "dim", "n", "params")
C_INT_MAX = 2**31 - 1  # FAISS and ScaNN read dimensions and parameters as C ints


class AnnIndex(abc.ABC):
    """An inner-product ANN index over row vectors, searchable in FAISS order (scores, ids).

    Attributes:
        backend: "flat", "hnsw", "ivf" or "scann".
        dim: the vector dimension.
        params: construction and search parameters (see each backend's `default_params`).
    """

    backend: ClassVar[str] = ""
    default_params: ClassVar[dict[str, Any]] = {}
    search_param_names: ClassVar[tuple[str, ...]] = ()
    batch_size: ClassVar[int] = 4096

    def __init__(self, dim: int, **params: Any) -> None:
        self.dim = check_positive_int(dim, "dim")
        unknown = sorted(set(params) - set(self.default_params))
        if unknown:
            raise InputError(f"{self.backend} index: unknown parameter(s) {unknown}; valid: "
                             f"{sorted(self.default_params)}")
        self.params: dict[str, Any] = {**self.default_params, **params}
        self._check_params()

    # ---- public API ---------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Number of vectors in the index (0 before `build`)."""

    def build(self, vectors: np.ndarray) -> None:
        """Replace the content with `vectors` (n, dim); their ids are 0..n-1."""
        self._build(check_vectors(vectors, "vectors", self.dim, allow_empty=False))

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Add rows; returns their int64 ids, consecutive after the existing ones."""
        array = check_vectors(vectors, "vectors", self.dim, allow_empty=True)
        if len(array) == 0:
            return np.zeros(0, dtype=np.int64)
        if not self.is_built:
            self._build(array)
            return np.arange(len(array), dtype=np.int64)
        return self._add(array)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best rows per query, best first, searched in batches.

        Returns:
            (scores float32 (n, k), ids int64 (n, k)); missing results (k > ntotal, or fewer
            found) are padded with score -inf and id -1.
        """
        array = check_vectors(queries, "queries", self.dim, allow_empty=True)
        k = check_positive_int(k, "k")
        self._require_built()
        scores = np.full((len(array), k), -np.inf, dtype=np.float32)
        ids = np.full((len(array), k), -1, dtype=np.int64)
        width = min(k, self.ntotal)
        if width == 0:
            return scores, ids
        for start in range(0, len(array), self.batch_size):
            stop = start + self.batch_size
            batch_scores, batch_ids = self._search(array[start:stop], width)
            scores[start:stop, :width] = batch_scores
            ids[start:stop, :width] = batch_ids
        scores[ids < 0] = -np.inf
        return scores, ids

    def copy(self) -> AnnIndex:
        """An independent copy: adding to one leaves the other as it was. This default
        rebuilds from `reconstruct` with the same parameters; backends copy faster."""
        twin = type(self)(self.dim, **copy.deepcopy(self.params))
        if self.is_built:
            twin.build(self.reconstruct())
        return twin

    def remove(self, ids: np.ndarray) -> None:
        """Remove rows by id (only some backends can)."""
        raise InputError(f"{self.backend} index: cannot remove vectors; build() a new index "
                         "over the vectors you keep")

    def set_search_params(self, **params: Any) -> None:
        """Change search-time parameters (see `search_param_names`)."""
        unknown = sorted(set(params) - set(self.search_param_names))
        if unknown:
            raise InputError(f"{self.backend} index: {unknown} are not search parameters; "
                             f"valid: {list(self.search_param_names)}")
        kept = dict(self.params)
        self.params.update(params)
        try:
            self._check_params()
        except InputError:
            self.params = kept  # a refused value never stays behind to be saved
            raise
        if self.is_built:
            self._apply_search_params()

    def search_param_grid(self, k: int) -> list[dict[str, Any]]:
        """Search settings from cheapest to most accurate, for `tune_index` (none to tune: [])."""
        return []

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Approximate memory held by the index, in bytes."""

    @abc.abstractmethod
    def reconstruct(self) -> np.ndarray:
        """All stored vectors (float32, row i has id i) for exact comparisons."""

    def reconstruct_rows(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) float32 stored vectors of the given ids, as `reconstruct()[ids]`;
        backends that can read single vectors do, without copying all of them."""
        return self.reconstruct()[np.asarray(ids, dtype=np.int64)]

    def save(self, directory: str | Path) -> None:
        """Write the index files, then `backend.json`, into `directory` (created if needed)."""
        self._require_built()
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        extra = self._save_files(folder)
        meta = {"backend": self.backend, "metric": "ip", "dim": self.dim, "n": self.ntotal,
                "params": self.params, **extra}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> AnnIndex:
        """Load an index written by `save`."""
        folder = Path(directory)
        meta = read_meta(folder)
        if meta["backend"] != cls.backend:
            raise ArtifactError(f"{folder / META_FILE}: backend {meta['backend']!r}, expected "
                                f"{cls.backend!r}; load it with metricls.ann.load_index")
        try:
            index = cls(meta["dim"], **meta["params"])
        except InputError as exc:
            raise ArtifactError(f"{folder / META_FILE}: bad params: {exc}") from exc
        index._load_files(folder, meta)
        if index.ntotal != meta["n"]:
            raise ArtifactError(f"{folder}: the index holds {index.ntotal} vectors but "
                                f"{META_FILE} says n={meta['n']}")
        return index

    @property
    def ids_are_positions(self) -> bool:
        """Whether `search` returns row positions 0..ntotal-1 as ids (not after a `remove`)."""
        return True

    @property
    def is_built(self) -> bool:
        """Whether `build` (or `load`) has run."""
        return self._is_built()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, ntotal={self.ntotal}, params={self.params})"

    # ---- backend hooks ------------------------------------------------------------------------
    @abc.abstractmethod
    def _is_built(self) -> bool: ...

    @abc.abstractmethod
    def _build(self, vectors: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _add(self, vectors: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search one batch for k <= ntotal; missing results may be id -1."""

    @abc.abstractmethod
    def _save_files(self, folder: Path) -> dict[str, Any]:
        """Write the index files; return extra keys for backend.json."""

    @abc.abstractmethod
    def _load_files(self, folder: Path, meta: dict[str, Any]) -> None: ...

    def _check_params(self) -> None:  # noqa: B027 - optional hook
        """Raise InputError for a bad value in `self.params`."""

    def _apply_search_params(self) -> None:  # noqa: B027 - optional hook
        """Push `self.params` search settings into the built index."""

    def _require_built(self) -> None:
        if not self.is_built:
            raise NotFittedError(f"{self.backend} index: empty; call build(vectors) first")


# ---- shared checks ----------------------------------------------------------------------------
def check_vectors(x: Any, name: str, dim: int, *, allow_empty: bool) -> np.ndarray:
    """`x` as a C-contiguous float32 (n, dim) array of finite values, or InputError."""
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected a 2-D numeric array (n, {dim}); {exc}") from exc
    if array.dtype.kind not in "fiu":
        raise InputError(f"{name}: expected a numeric array (n, {dim}), got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != dim:
        raise InputError(f"{name}: expected a 2-D array of shape (n, {dim}), got shape "
                         f"{array.shape}")
    if not allow_empty and array.shape[0] == 0:
        raise InputError(f"{name}: expected at least one row, got shape {array.shape}")
    with np.errstate(over="ignore"):  # too large for float32 -> inf, reported below
        array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise InputError(f"{name}: {len(rows)} row(s) with NaN or infinite values (after "
                         f"conversion to float32), e.g. rows {rows[:5].tolist()}")
    return array


def read_vectors(path: Path, dim: int, rows: int | None = None, *,
                 mmap: bool = False) -> np.ndarray:
    """The float32 (rows, dim) array an index saved in `path` (memory-mapped with `mmap`), or
    ArtifactError naming the file; `rows` None accepts any number of rows."""
    try:
        vectors = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: missing or not a readable .npy file ({exc})") from exc
    if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.dtype != np.float32 \
            or rows not in (None, vectors.shape[0]):
        raise ArtifactError(f"{path}: expected float32 of shape ({rows or 'n'}, {dim}), got "
                            f"{vectors.dtype} {vectors.shape}")
    return vectors


def probe_steps(limit: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and the halfway steps) below `limit`, then
    `limit`: the settings `tune_index` tries for a count of lists or leaves to search."""
    steps = sorted({s for i in range(max(limit, 1).bit_length()) for s in (2**i, 3 * 2**i // 2)
                    if 0 < s < limit})
    return [*steps, limit]


def check_optional_int(params: dict[str, Any], name: str, backend: str) -> None:
    """Raise InputError unless params[name] is None or a positive int."""
    if params[name] is not None:
        check_positive_int(params[name], f"{backend} index parameter {name}")


def read_meta(folder: Path) -> dict[str, Any]:
    """The validated `backend.json` of an index folder, or ArtifactError naming the file."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing; expected an ANN index folder written by "
                            "AnnIndex.save") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc}); rebuild the index") from exc
    if not isinstance(meta, dict) or any(key not in meta for key in META_KEYS):
        raise ArtifactError(f"{path}: expected a JSON object with keys {list(META_KEYS)}")
    fix = remedy(path)
    if meta["metric"] != "ip" or not isinstance(meta["params"], dict):
        raise ArtifactError(f"{path}: metric {describe(meta['metric'])} and params "
                            f"{describe(meta['params'])}, expected metric 'ip' and a params "
                            f"object; {fix}")
    if not isinstance(meta["backend"], str):
        raise ArtifactError(f"{path}: backend is {describe(meta['backend'])}, expected a "
                            f"backend name; {fix}")
    for key, low, high in (("dim", 1, C_INT_MAX), ("n", 0, 2**63 - 1)):
        if isinstance(meta[key], bool) or not isinstance(meta[key], int) \
                or not low <= meta[key] <= high:
            raise ArtifactError(f"{path}: {key} is {describe(meta[key])}, expected an int in "
                                f"[{low}, {high}]; {fix}")
    if bad := _bad_param(meta["params"]):
        raise ArtifactError(f"{path}: params: {bad}; {fix}")
    return meta


def _bad_param(params: dict[str, Any], prefix: str = "") -> str | None:
    """What is wrong with the first parameter that FAISS or ScaNN could not take (an int beyond
    a C int, NaN, a list), or None."""
    for name, value in params.items():
        if isinstance(value, dict):
            if bad := _bad_param(value, f"{prefix}{name}."):
                return bad
        elif not (value is None or isinstance(value, bool | str)
                  or (isinstance(value, int) and abs(value) <= C_INT_MAX)
                  or (isinstance(value, float) and math.isfinite(value))):
            return (f"{prefix}{name} is {describe(value)}, expected null, a bool, a string, a "
                    f"finite number or an int within +-{C_INT_MAX}")
    return None
