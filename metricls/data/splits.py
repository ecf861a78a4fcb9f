"""Deterministic train/valid/test assignment from item ids."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["SPLITS", "md5_split"]

SPLITS: tuple[str, ...] = ("train", "valid", "test")


def md5_split(ids: Iterable[str]) -> np.ndarray:
    """Split of each id by `int(md5(id), 16) % 10`: 0 test, 1 valid, else train (~80/10/10).

    Args:
        ids: item ids (strings; other values are cast with `str`).

    Returns:
        (n,) array of dtype `<U5` holding "train", "valid" or "test".
    """
    names = ("test", "valid") + ("train",) * 8
    out = [names[int(hashlib.md5(str(i).encode("utf-8", "surrogatepass")).hexdigest(), 16) % 10]
           for i in ids]
    return np.array(out, dtype="<U5")
