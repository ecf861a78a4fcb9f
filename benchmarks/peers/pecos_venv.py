"""The virtual environment the PECOS peer runs in, made by this benchmark (never by metricls).

libpecos needs numpy < 2 and metricls numpy >= 2, so PECOS cannot share the benchmark's
Python: on first use, `pecos_python` creates ``.cache/peers-venv`` (git-ignored) with
``python -m venv`` and pip-installs `PECOS_PACKAGES` into it, from PyPI; `peers_pecos.py` then
runs there.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from metricls.errors import MetriclsError

log = logging.getLogger("benchmarks.peers")
PECOS_PACKAGES = (["numpy<2", "scipy<1.14", "scikit-learn"], ["--no-deps", "libpecos"])


def pecos_python(venv: Path) -> Path:
    """The Python of `venv` with libpecos importable, creating the venv with pip if needed."""
    python = Path(venv).absolute() / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import pecos.xmc.xlinear"],
                                          capture_output=True).returncode == 0:
        return python
    log.info("creating %s for PECOS (libpecos needs numpy < 2)", venv)
    call([sys.executable, "-m", "venv", "--clear", str(venv)], f"creating the venv {venv}")
    for args in PECOS_PACKAGES:
        call([str(python), "-m", "pip", "install", "-q", *args],
             f"pip install {' '.join(args)} into {venv}")
    return python


def call(command: list[str], what: str) -> None:
    """Run `command`; a failure raises one line naming `what` and the last line it printed."""
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise MetriclsError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise MetriclsError(f"{what} failed (exit {done.returncode}): {lines[-1]}; leave "
                            "'pecos' out of --peers to run the benchmark without it")
