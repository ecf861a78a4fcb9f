"""Boundary checks of user arguments: each failure is one `InputError` line naming the argument."""

from __future__ import annotations

import math
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from metricls.errors import InputError

__all__ = [
    "check_features",
    "check_k",
    "check_label_lists",
    "check_texts",
    "dedupe",
    "describe",
    "file_problem",
    "label_list_problem",
    "to_number",
    "unicode_problem",
]

_F32_MAX = float(np.finfo(np.float32).max)


def describe(value: Any, width: int = 40) -> str:
    """Short `type value` text of a bad value for messages, e.g. `str 'a,b'` or `null`."""
    if value is None:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    if len(text) > width:
        text = text[: width - 3] + "..."
    return f"{type(value).__name__} {text}"


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISSOCK, "a socket"))


def file_problem(path: Path, missing: str = "no such file") -> str | None:
    """Why `path` is not a regular file to read (`missing` when nothing is there, or e.g.
    "not a regular file (a character device)" for /dev/zero), or None when it is one."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return missing
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    return f"not a regular file ({kind})"


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode (a lone surrogate, as a JSON "\\ud800" escape gives:
    it cannot be written as UTF-8), or None when it is valid."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"is not valid Unicode (lone surrogate {text[exc.start]!r} at character "
                f"{exc.start})")
    return None


def check_positive_int(value: Any, name: str) -> int:
    """`value` as an int >= 1 (numpy ints accepted, bools rejected), or InputError naming
    `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name}: expected a positive int, got {describe(value)}")
    return int(value)


def check_k(k: Any, name: str = "k") -> int:
    """A positive int: how many tags, neighbours or ranks."""
    return check_positive_int(k, name)


def _as_sequence(values: Any, name: str) -> list:
    """A list from a list/tuple/1-D array/Series; anything else (a mapping, a set) is refused."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InputError(f"{name}: expected a 1-D list, got an array of shape {values.shape}")
        return values.tolist()
    if isinstance(values, (list, tuple)):
        return list(values)
    if hasattr(values, "tolist") and hasattr(values, "index"):  # pandas Series
        return list(values.tolist())
    raise InputError(f"{name}: expected a list, got {type(values).__name__}")


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """A list of non-blank strings; a bare string is refused with a hint."""
    if isinstance(texts, (str, bytes)):
        raise InputError(f"{name}: pass a list of texts, e.g. predict([text]), "
                         f"got a bare {type(texts).__name__}")
    items = _as_sequence(texts, name)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(f"{name}[{i}]: expected a non-empty string, got {describe(text)}")
        if not text.strip():
            raise InputError(f"{name}[{i}]: expected a non-empty string, got {text!r}")
        problem = unicode_problem(text)
        if problem:
            raise InputError(f"{name}[{i}]: the text {problem}")
    return items


def check_features(x: Any, dim: int, name: str = "features") -> np.ndarray:
    """An (n, dim) finite float32 array; names the first row holding NaN or inf."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InputError(f"{name}: expected an (n, {dim}) numeric array, got a ragged "
                         f"{type(x).__name__}") from exc
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name}: expected an (n, {dim}) numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(f"{name}: expected an (n, {dim}) array, got shape {arr.shape}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        col = int(np.flatnonzero(~np.isfinite(out[row]))[0])
        raise InputError(f"{name}: row {row} has a non-finite value {arr[row, col].item()!r} "
                         f"at column {col} (NaN, inf or beyond float32)")
    return np.ascontiguousarray(out)


def to_number(value: Any, *, parse_str: bool = False) -> float:
    """`value` as a float that is finite in float32, else InputError("must be ...") to prefix.

    Args:
        value: an int or float (bools rejected).
        parse_str: also accept a numeric string (a CSV cell).
    """
    if parse_str and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"must be a number, got {describe(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"must be a number, got {describe(value)}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x) or abs(x) > _F32_MAX:
        raise InputError(f"must be finite (float32), got {value!r}")
    return x


def label_list_problem(value: Any) -> str | None:
    """Why `value` is not a list of non-empty label strings, or None when it is one."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            return f"must be a list of strings, got an array of shape {value.shape}"
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return f"must be a list of strings, got {describe(value)}"
    for j, label in enumerate(value):
        if isinstance(label, (list, tuple, dict, np.ndarray)):
            return f"must be a flat list of strings, got a nested {type(label).__name__} " \
                   f"at position {j}"
        if not isinstance(label, str):
            return f"must be a list of strings, got {describe(label)} at position {j}"
        if not label.strip():
            return f"must hold non-empty strings, got {label!r} at position {j}"
        problem = unicode_problem(label)
        if problem:
            return f"has label {label!r} (position {j}), which {problem}"
    return None


def dedupe(labels: Iterable[str]) -> list[str]:
    """Labels in first-seen order without repeats."""
    return list(dict.fromkeys(labels))


def check_label_lists(labels: Any, name: str = "labels") -> list[list[str]]:
    """A list of label lists (one per item) of non-empty strings, order kept, repeats dropped."""
    if isinstance(labels, (str, bytes)):
        raise InputError(f"{name}: expected a list of label lists, e.g. [['a', 'b']], "
                         f"got a bare {type(labels).__name__}")
    if isinstance(labels, np.ndarray) and labels.ndim != 1:
        raise InputError(f"{name}: expected a list of label lists, got a {labels.ndim}-D "
                         f"array of shape {labels.shape}; pass [[...], ...] of strings")
    rows = _as_sequence(labels, name)
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            raise InputError(f"{name}[{i}]: must be a list of strings, got {describe(row)}; "
                             f"wrap it, e.g. [{row!r}]")
        problem = label_list_problem(row)
        if problem:
            raise InputError(f"{name}[{i}]: {problem}")
        out.append(dedupe(row.tolist() if isinstance(row, np.ndarray) else row))
    return out


def parse_csv(text: str | None, kind: type = str) -> list | None:
    """A comma-separated option as a list of `kind` (None when not given)."""
    if text is None:
        return None
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
