"""LabelVocab: label names <-> ids, their training counts, multi-hot CSR matrices, propensities."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metricls.errors import InputError
from metricls.metrics import propensities as _propensities
from metricls.validation import check_positive_int, describe, unicode_problem

__all__ = ["LabelVocab"]


class LabelVocab:
    """Label names, where a label's id is its position, with the item count of each label.

    Args:
        names: unique, non-empty label names.
        counts: number of (training) items carrying each label, same length as `names`.
        n_items: number of items the counts were taken over.
    """

    def __init__(self, names: Sequence[str], counts: Sequence[int], n_items: int) -> None:
        names = tuple(names)
        bad = [n for n in names if not isinstance(n, str) or not n.strip()]
        if bad:
            raise InputError(f"label vocabulary: label names must be non-empty strings, "
                             f"got {describe(bad[0])}")
        bad_unicode = next((n for n in names if unicode_problem(n)), None)
        if bad_unicode is not None:
            raise InputError(f"label vocabulary: label {bad_unicode!r} "
                             f"{unicode_problem(bad_unicode)}")
        if len(set(names)) != len(names):
            dup = next(n for n, c in Counter(names).items() if c > 1)
            raise InputError(f"label vocabulary: label {dup!r} appears more than once")
        arr = np.asarray(counts)
        if arr.shape != (len(names),) or (arr.size and arr.dtype.kind not in "iu"):
            raise InputError(f"label vocabulary: expected {len(names)} integer counts, got "
                             f"shape {arr.shape} dtype {arr.dtype}")
        if (arr < 0).any():
            raise InputError("label vocabulary: counts must be >= 0")
        if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) \
                or n_items < 0:
            raise InputError(f"label vocabulary: n_items must be an int >= 0, got "
                             f"{describe(n_items)}")
        self.names: tuple[str, ...] = names
        self.counts: np.ndarray = arr.astype(np.int64)
        self.counts.flags.writeable = False
        self.n_items: int = int(n_items)
        self._ids = {name: i for i, name in enumerate(names)}

    @classmethod
    def fit(cls, label_lists: Iterable[Sequence[str]] | None, *, min_count: int = 1) -> LabelVocab:
        """Vocabulary of the labels seen at least `min_count` times, most frequent first.

        Ids follow (-count, name); `n_items` is the number of label lists (items).
        """
        if label_lists is None:
            raise InputError("labels: fitting a label vocabulary needs labels, got None")
        check_positive_int(min_count, "min_count")
        rows = list(label_lists)
        if any(isinstance(row, str) for row in rows):
            raise InputError("labels: expected one list of labels per item, got a bare string")
        counts = Counter(chain.from_iterable(set(row) for row in rows))
        kept = sorted(((-c, n) for n, c in counts.items() if c >= min_count))
        return cls([n for _, n in kept], np.array([-c for c, _ in kept], dtype=np.int64),
                   len(rows))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelVocab):
            return NotImplemented
        return (self.names == other.names and self.n_items == other.n_items
                and np.array_equal(self.counts, other.counts))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(self.names[:3]) + (", ..." if len(self) > 3 else "")
        return f"LabelVocab({len(self)} labels over {self.n_items} items: {head})"

    def index(self, name: str) -> int:
        """Id of `name`; an unknown name raises InputError with the nearest known name."""
        try:
            return self._ids[name]
        except (KeyError, TypeError):
            near = difflib.get_close_matches(str(name), self.names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise InputError(f"unknown label {name!r}{hint}") from None

    def to_csr(self, label_lists: Iterable[Sequence[str]] | None, *,
               extend_unknown: bool = False) -> tuple[sp.csr_matrix, list[str]]:
        """(n, L) float32 multi-hot CSR of `label_lists`, and the names of unknown labels.

        Unknown labels (not in the vocabulary) are dropped, or with `extend_unknown` get
        extra columns L, L+1, ... in order of first appearance, so metrics count them as
        misses. Either way their names come back in that order.
        """
        if label_lists is None:
            raise InputError("labels: a label matrix needs labels, got None")
        rows = label_lists if isinstance(label_lists, list) else list(label_lists)
        if any(isinstance(row, str) for row in rows):
            raise InputError("labels: expected one list of labels per item, got a bare string")
        try:
            lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
            flat = np.fromiter(chain.from_iterable(rows), dtype=object, count=int(lengths.sum()))
            cols = pd.Index(self.names, dtype=object).get_indexer(flat) if len(self) else \
                np.full(len(flat), -1, dtype=np.int64)
            unknown_mask = cols < 0
            codes, uniques = pd.factorize(flat[unknown_mask])
        except TypeError as exc:
            raise InputError("labels: expected one list of label strings per item") from exc
        except UnicodeEncodeError:  # pandas hashes labels as UTF-8
            bad = next(x for x in flat if isinstance(x, str) and unicode_problem(x))
            raise InputError(f"labels: label {bad!r} {unicode_problem(bad)}") from None
        row_ids = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
        unknown = [str(u) for u in uniques]
        n_cols = len(self)
        if extend_unknown:
            cols = cols.copy()
            cols[unknown_mask] = len(self) + codes
            n_cols += len(unknown)
        else:
            row_ids, cols = row_ids[~unknown_mask], cols[~unknown_mask]
        data = np.ones(len(cols), dtype=np.float32)
        Y = sp.csr_matrix((data, (row_ids, cols)), shape=(len(rows), n_cols), dtype=np.float32)
        Y.sum_duplicates()
        Y.data[:] = 1.0  # a label repeated within a row is still one positive
        return Y, unknown

    def propensities(self, a: float = 0.55, b: float = 1.5, n_extra: int = 0) -> np.ndarray:
        """(L + n_extra,) float64 Jain et al. (2016) propensities from the counts and n_items.

        p = 1 / (1 + C exp(-a log(N_l + b))), C = (log(n_items) - 1) (b + 1)^a; the `n_extra`
        trailing entries are for unknown-label columns (count 0). An n_items below 3 counts
        as 3 so that C stays positive.
        """
        if isinstance(n_extra, bool) or not isinstance(n_extra, (int, np.integer)) or n_extra < 0:
            raise InputError(f"n_extra: expected an int >= 0, got {describe(n_extra)}")
        counts = np.concatenate([self.counts, np.zeros(int(n_extra), dtype=np.int64)])
        return _propensities(counts, max(self.n_items, 3), a=a, b=b)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready `{"labels": [...], "counts": [...], "n_items": n}`."""
        return {"labels": list(self.names), "counts": [int(c) for c in self.counts],
                "n_items": self.n_items}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelVocab:
        """Inverse of `to_dict`."""
        if not isinstance(d, dict):
            raise InputError(f"label vocabulary: expected a JSON object, got {describe(d)}")
        missing = [k for k in ("labels", "counts", "n_items") if k not in d]
        if missing:
            raise InputError(f"label vocabulary: missing key {missing[0]!r} "
                             f"(expected 'labels', 'counts', 'n_items')")
        if not isinstance(d["labels"], list) or not isinstance(d["counts"], list):
            raise InputError("label vocabulary: 'labels' and 'counts' must be lists")
        if any(isinstance(c, bool) or not isinstance(c, int) for c in d["counts"]):
            raise InputError("label vocabulary: 'counts' must be integers")
        return cls(d["labels"], np.array(d["counts"], dtype=np.int64).reshape(-1), d["n_items"])

    def with_label(self, name: str, count: int) -> LabelVocab:
        """A copy with `name` appended as id L (existing ids unchanged)."""
        if name in self._ids:
            raise InputError(f"label {name!r} is already in the vocabulary (id {self._ids[name]})")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise InputError(f"count: expected an int >= 0, got {describe(count)}")
        return LabelVocab((*self.names, name), np.append(self.counts, np.int64(count)),
                          self.n_items)

    def without_label(self, name: str) -> tuple[LabelVocab, int]:
        """A copy without `name`, and the id it had (later ids shift down by one)."""
        i = self.index(name)
        return (LabelVocab(self.names[:i] + self.names[i + 1:], np.delete(self.counts, i),
                           self.n_items), i)
