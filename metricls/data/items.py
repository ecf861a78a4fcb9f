"""Items read from a JSONL, CSV or Parquet table; each problem is one `InputError` line naming
the file, the line (JSONL) or 1-based data row (CSV, Parquet), the field and what was expected."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metricls.data.features import FeatureRows, open_features
from metricls.data.splits import SPLITS, md5_split
from metricls.data.tables import (
    MISSING,
    SUPPORTED_SUFFIXES,
    Table,
    check_regular_file,
    iter_tables,
    read_lines,
    read_table,
)
from metricls.errors import InputError
from metricls.validation import (
    check_positive_int,
    dedupe,
    describe,
    label_list_problem,
    to_number,
    unicode_problem,
)

__all__ = ["SUPPORTED_SUFFIXES", "Items", "iter_items", "read_items", "read_texts",
           "resolve_dataset"]

DATASETS = {"debtags": "debtags-bookworm.jsonl.gz", "debtags-labels": "debtags-labels.jsonl"}


def show_value(v: Any) -> str:
    """`describe` of a field's value, or "nothing" for a field a JSONL line lacks."""
    return "nothing (no such field)" if v is MISSING else describe(v)


@dataclass(frozen=True, eq=False)
class Items:
    """A table of items; `labels` is None when the table has no label column."""

    ids: list[str]
    texts: list[str] | None
    features: np.ndarray | FeatureRows | None  # FeatureRows: memory-mapped, read lazily
    labels: list[list[str]] | None
    split: np.ndarray
    source: str

    def __post_init__(self) -> None:
        parts = (self.texts, self.features, self.labels, self.split)
        sizes = [len(x) for x in parts if x is not None]
        if any(s != len(self.ids) for s in sizes):
            raise InputError(f"{self.source}: {len(self.ids)} ids but parts of lengths {sizes}")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, split: str | Sequence[str] | np.ndarray) -> Items:
        """Items of split name(s) ("all" = everything) or of an index / boolean array."""
        if isinstance(split, str):
            split = [split]
        arr = np.asarray(split)
        if arr.size == 0:
            return self._take(np.zeros(0, dtype=np.int64))
        if arr.dtype.kind == "b":
            if arr.shape != (len(self),):
                raise InputError(f"subset: boolean mask of shape {arr.shape}, expected "
                                 f"({len(self)},)")
            return self._take(np.flatnonzero(arr))
        if arr.dtype.kind in "iu":
            return self._take(arr.astype(np.int64).reshape(-1))
        bad = [s for s in arr.reshape(-1).tolist() if s not in (*SPLITS, "all")]
        if bad:
            raise InputError(f"subset: unknown split {bad[0]!r}, expected 'train', 'valid', "
                             f"'test', 'all', their list, or an index / boolean array")
        names = arr.reshape(-1).tolist()
        if "all" in names:
            return self
        return self._take(np.flatnonzero(np.isin(self.split, names)))

    def _take(self, idx: np.ndarray) -> Items:
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise InputError(f"subset: index out of range for {len(self)} items")
        pick = idx.tolist()
        return replace(self, ids=[self.ids[i] for i in pick],
                       texts=None if self.texts is None else [self.texts[i] for i in pick],
                       features=None if self.features is None else self.features.take(idx,
                                                                                      axis=0),
                       labels=None if self.labels is None else [self.labels[i] for i in pick],
                       split=self.split[idx])


def resolve_dataset(path_or_name: str | Path) -> Path:
    """The packaged file of a dataset name ("debtags"), else `path_or_name` if it exists."""
    if str(path_or_name) in DATASETS:
        path = Path(__file__).resolve().parents[1] / "datasets" / DATASETS[str(path_or_name)]
        if not path.is_file():
            raise InputError(f"{path}: the packaged {path_or_name!r} dataset is missing")
        return path
    path = Path(path_or_name).expanduser()
    return check_regular_file(path, str(path),
                              f"no such file (or a dataset name: {', '.join(DATASETS)})")


def shown_path(path: str | Path) -> str:
    """How reports name a data file without machine paths: a packaged dataset by its name, a
    file below the current folder relative to it, any other file as given."""
    path = Path(path)
    for name, file in DATASETS.items():
        if path.resolve() == (Path(__file__).resolve().parents[1] / "datasets" / file):
            return name
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


# ---- columns -------------------------------------------------------------------------------
def is_null(v: Any) -> bool:
    """Whether a field's value is missing: null, absent, pandas NA or NaN."""
    return v is None or v is MISSING or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def read_ids(t: Table, col: str, first: dict[str, str] | None = None) -> list[str]:
    """Ids of a table; `first` maps ids seen in earlier blocks to where they were."""
    ids: list[str] = []
    first = {} if first is None else first
    for i, v in enumerate(t.column(col)):
        if (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or \
                (isinstance(v, float) and v.is_integer()):
            v = str(int(v))
        if not isinstance(v, str) or not v.strip():
            raise t.error(i, col, f"must be a non-empty string or integer id, got {show_value(v)}")
        if problem := unicode_problem(v):
            raise t.error(i, col, problem)
        if v in first:
            raise t.error(i, col, f"repeats id {v!r} (first on {first[v]})")
        first[v] = t.at(i)
        ids.append(v)
    return ids


def _read_texts(t: Table, cols: Sequence[str]) -> list[str]:
    texts = []
    for i, parts in enumerate(zip(*(t.column(c) for c in cols), strict=True)):
        kept = []
        for col, v in zip(cols, parts, strict=True):
            if is_null(v):
                continue
            if not isinstance(v, str):
                raise t.error(i, col, f"must be a string, got {show_value(v)}")
            if problem := unicode_problem(v):
                raise t.error(i, col, problem)
            if v.strip():
                kept.append(v.strip())
        if not kept:
            names = ", ".join(repr(c) for c in cols)
            raise InputError(f"{t.where(i)}: empty text (text columns {names} are all empty)")
        texts.append("\n".join(kept))
    return texts


def _read_labels(t: Table, col: str, delimiter: str) -> list[list[str]]:
    out = []
    for i, v in enumerate(t.column(col)):
        if t.kind == "csv":
            cell = "" if is_null(v) else str(v)
            out.append(dedupe(p.strip() for p in cell.split(delimiter) if p.strip()))
            continue
        problem = label_list_problem(v) if not is_null(v) else \
            f"must be a list of strings, got {show_value(v)} (use [] for no labels)"
        if problem:
            raise t.error(i, col, problem)
        out.append(dedupe(v.tolist() if isinstance(v, np.ndarray) else v))
    return out


def _read_numbers(t: Table, cols: Sequence[str], vector: str | None) -> np.ndarray:
    """(n, len(cols) [+ vector length]) float32 of numeric columns then a vector column."""
    parse, out = t.kind == "csv", np.zeros((len(t), len(cols)))
    for j, col in enumerate(cols):
        for i, v in enumerate(t.column(col)):
            try:
                out[i, j] = to_number(v, parse_str=parse)
            except InputError as exc:
                raise t.error(i, col, str(exc)) from None
    vectors: list[list[float]] = []
    for i, v in enumerate(t.column(vector) if vector else []):
        if parse and isinstance(v, str):
            v = [p for p in re.split(r"[\s,;]+", v.strip().strip("[]")) if p]
        v = v.tolist() if isinstance(v, np.ndarray) and v.ndim == 1 else v
        if not isinstance(v, (list, tuple)) or not v:
            raise t.error(i, vector, f"must be a non-empty list of numbers, got {show_value(v)}")
        if vectors and len(v) != len(vectors[0]):
            raise t.error(i, vector, f"has {len(v)} numbers, expected {len(vectors[0])} "
                                     f"(as on {t.at(0)})")
        try:
            vectors.append([to_number(x, parse_str=parse) for x in v])
        except InputError as exc:
            raise t.error(i, vector, f"{exc} in the list") from None
    if vector:
        out = np.hstack([out, np.asarray(vectors)])
    return np.ascontiguousarray(out, dtype=np.float32)


def _read_split(t: Table, col: str) -> np.ndarray:
    values = t.column(col)
    for i, v in enumerate(values):
        if not isinstance(v, str) or v not in SPLITS:
            raise t.error(i, col, f"must be 'train', 'valid' or 'test', got {show_value(v)}")
    return np.array(values, dtype="<U5")


def _names(value: str | Sequence[str] | None, arg: str, many: bool = True) -> tuple[str, ...]:
    """Column name(s) of an argument as a tuple; a bare string is one name."""
    names = () if value is None else (value,) if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) and c for c in names) \
            or (not many and len(names) > 1):
        raise InputError(f"{arg}: expected {'column names' if many else 'a column name'}, "
                         f"got {value!r}")
    return tuple(names)


def read_items(path: str | Path, *, id_column: str = "id", text_columns: Sequence[str] = (),
               feature_columns: Sequence[str] = (), vector_column: str | None = None,
               label_column: str = "labels", label_delimiter: str = "|",
               split_column: str | None = None, require_labels: bool = True,
               features_path: str | Path | None = None) -> Items:
    """Read and validate a JSONL (.jsonl/.json/.ndjson[.gz]), CSV (.csv[.gz]) or Parquet table.

    Args:
        path: the file; its suffix picks the format.
        id_column: unique item ids (strings or integers, cast to str).
        text_columns: string columns joined with "\\n" into each item's text.
        feature_columns: numeric columns forming the features, in this order.
        vector_column: a column of equal-length number lists, appended to the features.
        label_column: a list of strings per item (JSONL, Parquet) or a `label_delimiter`
            separated string (CSV; an empty cell is no labels).
        label_delimiter: separator of labels in a CSV cell.
        split_column: "train"/"valid"/"test" per item; default `md5_split` of the ids.
        require_labels: without it, a missing label column gives `labels=None`.
        features_path: a .npy (n, d) float array whose row i holds the features of table row
            i, memory-mapped and read lazily (`FeatureRows`), instead of feature columns.
    """
    texts_cols, feat_cols = _names(text_columns, "text_columns"), _names(feature_columns,
                                                                         "feature_columns")
    for arg, value in (("id_column", id_column), ("label_column", label_column),
                       ("vector_column", vector_column), ("split_column", split_column)):
        if len(_names(value, arg, many=False)) != 1 and arg in ("id_column", "label_column"):
            raise InputError(f"{arg}: expected a column name, got {value!r}")
    if not (texts_cols or feat_cols or vector_column or features_path):
        raise InputError("read_items: pass text_columns, feature_columns, vector_column or "
                         "features_path")
    if features_path and (feat_cols or vector_column):
        raise InputError("read_items: pass features_path or feature_columns/vector_column, "
                         "not both")
    if not isinstance(label_delimiter, str) or not label_delimiter:
        raise InputError(f"label_delimiter: expected a non-empty string, got {label_delimiter!r}")
    resolved = resolve_dataset(path)
    source = str(resolved)
    table = read_table(resolved, source)
    ids = read_ids(table, id_column)
    labels = None
    if require_labels or label_column in table.columns:
        labels = _read_labels(table, label_column, label_delimiter)
    return Items(
        ids=ids,
        texts=_read_texts(table, texts_cols) if texts_cols else None,
        features=open_features(features_path, len(ids), ids) if features_path else
        _read_numbers(table, feat_cols, vector_column) if feat_cols or vector_column else None,
        labels=labels,
        split=_read_split(table, split_column) if split_column else md5_split(ids),
        source=source)


def read_texts(path: str | Path, text_columns: Sequence[str] = ()) -> list[str]:
    """Texts of a file: a table's `text` column (else `text_columns`, joined), or plain text.

    A JSONL, CSV or Parquet file (by suffix) gives one text per row, from its ``text`` field
    when it has one, else from `text_columns` joined with "\\n" as `read_items` does. Any
    other file gives one text per non-blank line (UTF-8).
    """
    source, resolved = str(path), Path(path).expanduser()
    check_regular_file(resolved, source, "no such file (expected a file of texts)")
    if resolved.name.lower().endswith(SUPPORTED_SUFFIXES):
        table = read_table(resolved, source)
        columns = ("text",) if "text" in table.columns or not text_columns else text_columns
        return _read_texts(table, _names(tuple(columns), "text_columns"))
    texts = [line.strip() for line in read_lines(resolved, source) if line.strip()]
    if not texts:
        raise InputError(f"{source}: no texts (expected one text per line)")
    return texts


def iter_items(path: str | Path, *, rows: int, id_column: str = "id",
               text_columns: Sequence[str] = (), feature_columns: Sequence[str] = (),
               vector_column: str | None = None) -> Iterator[Items]:
    """Read a table in blocks of at most `rows` items: ids and texts and/or features, no labels.

    The columns mean what they mean to `read_items`, and problems are reported the same way
    (file, line or row of the whole file, field). Ids must be unique across the file.
    Missing files, bad arguments and an unsupported suffix fail at the call; the rows fail
    when their block is read.
    """
    texts_cols = _names(text_columns, "text_columns")
    feat_cols = _names(feature_columns, "feature_columns")
    _names(id_column, "id_column", many=False)
    _names(vector_column, "vector_column", many=False)
    if not (texts_cols or feat_cols or vector_column):
        raise InputError("iter_items: pass text_columns, feature_columns or vector_column")
    check_positive_int(rows, "rows")
    resolved = resolve_dataset(path)
    tables = iter_tables(resolved, str(resolved), rows)
    return _item_blocks(tables, id_column, texts_cols, feat_cols, vector_column)


def _item_blocks(tables: Iterator[Table], id_column: str, texts_cols: tuple[str, ...],
                 feat_cols: tuple[str, ...], vector_column: str | None) -> Iterator[Items]:
    first: dict[str, str] = {}
    for table in tables:
        ids = read_ids(table, id_column, first)
        yield Items(ids=ids, texts=_read_texts(table, texts_cols) if texts_cols else None,
                    features=_read_numbers(table, feat_cols, vector_column)
                    if feat_cols or vector_column else None,
                    labels=None, split=md5_split(ids), source=table.source)
