"""Progress bars that stay quiet in non-interactive logs and with --quiet."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

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


def progress(items: Iterable[T], *, desc: str, total: int | None = None,
             **kwargs) -> Iterator[T]:
    """Iterate `items` with a tqdm bar unless quiet."""
    if quiet():
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, leave=False, **kwargs)
