"""The machine a benchmark ran on, for its JSON."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any


def machine_info(packages: Sequence[str] = ()) -> dict[str, Any]:
    """CPU count, memory, platform, Python, and the installed version of each of `packages`."""
    found: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version()}
    with contextlib.suppress(ValueError, OSError, AttributeError):  # sysconf is POSIX-only
        found["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                   / 2**30, 1)
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found
