"""Progress bars that stay quiet in non-interactive logs and with --quiet."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def quiet() -> bool:
    """True when progress bars should not be drawn ($METRICLS_QUIET=1 or no terminal)."""
    return os.environ.get("METRICLS_QUIET") == "1" or not sys.stderr.isatty()


def set_quiet(value: bool) -> None:
    """Turn progress bars off (True) or back to automatic (False)."""
    if value:
        os.environ["METRICLS_QUIET"] = "1"
    else:
        os.environ.pop("METRICLS_QUIET", None)


class _Plain(Generic[T]):
    """The no-bar stand-in: iterates, and ignores postfix updates."""

    def __init__(self, items: Iterable[T]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def set_postfix(self, **kwargs: Any) -> None:
        """Nothing to draw."""


def progress(items: Iterable[T], *, desc: str, total: int | None = None,
             leave: bool = False) -> Iterable[T]:
    """`items` wrapped in a tqdm bar (with `set_postfix`), or a plain iterable when quiet."""
    if quiet():
        return _Plain(items)
    return tqdm(items, desc=desc, total=total, leave=leave, dynamic_ncols=True)
