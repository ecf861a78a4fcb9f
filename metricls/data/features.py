"""FeatureRows: item features kept in a memory-mapped .npy file and read a few rows at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metricls.data.tables import check_regular_file
from metricls.errors import InputError

CHECK_ROWS = 65_536  # rows read per chunk when checking a file for NaN / inf


class FeatureRows:
    """A lazy (n, d) float32 view of some rows of a (memory-mapped) 2-D array.

    Nothing is read until rows are asked for: `rows[idx]` and `rows[a:b]` return float32
    arrays of just those rows, and `take(idx, axis=0)` (what `Items.subset` calls, as on a numpy
    array) returns another lazy view, so a split of a large file costs one index array.

    Args:
        base: the (N, d) array, typically ``np.load(path, mmap_mode="r")``.
        rows: the rows of `base` this view holds, in order (None: all of them).
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, base: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.base = base
        self.rows = rows

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), int(self.base.shape[1]))

    def __len__(self) -> int:
        return int(self.base.shape[0]) if self.rows is None else len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        picked = self.base[key] if self.rows is None else self.base[self.rows[key]]
        return np.ascontiguousarray(picked, dtype=np.float32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row in memory at once: only for small views (numpy conversions)."""
        return self[:].astype(dtype or np.float32, copy=False)

    def take(self, indices: Sequence[int] | np.ndarray, axis: int = 0) -> FeatureRows:
        """A lazy view of rows `indices` of this view (negative indices count from the end)."""
        if axis != 0:
            raise InputError("FeatureRows.take: only axis=0 (rows) is supported")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise InputError(f"features: row index out of range for {len(self)} rows")
        return FeatureRows(self.base, idx if self.rows is None else self.rows[idx])


def open_features(path: str | Path, n_rows: int, ids: Sequence[str] | None = None) -> FeatureRows:
    """The features of a .npy file, memory-mapped: one row per item, in the table's order.

    Args:
        path: a .npy file of an (n_rows, d) float array (``np.save``), opened read-only.
        n_rows: the number of items (table rows) it must match.
        ids: the item ids, to name the item of a bad row.

    Raises:
        InputError: naming the file (and row): missing, not a .npy, wrong shape or dtype, or a
            row holding NaN or inf (checked in chunks of `CHECK_ROWS` rows).
    """
    file = check_regular_file(Path(path).expanduser(), str(Path(path).expanduser()),
                              "no such features file (data.features_path: a .npy of shape "
                              "(n_items, d))")
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{file}: not a readable .npy array ({exc})") from None
    if array.ndim != 2 or array.shape[0] != n_rows or array.dtype.kind != "f":
        raise InputError(f"{file}: expected a 2-D float array with one row per item ({n_rows} "
                         f"rows, in the order of the table), got shape {array.shape} dtype "
                         f"{array.dtype}")
    for start in range(0, n_rows, CHECK_ROWS):
        with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf: refused too
            finite = np.isfinite(np.asarray(array[start:start + CHECK_ROWS], dtype=np.float32))
        bad = ~finite.all(axis=1)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            col = int(np.flatnonzero(~finite[row - start])[0])
            item = f" (item {ids[row]!r})" if ids is not None else ""
            raise InputError(f"{file}: row {row}{item} has a non-finite value "
                             f"{array[row, col].item()!r} at column {col}")
    return FeatureRows(array)
