"""Screenshots of HTML pages with headless Chromium (Debian: `apt-get install chromium`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from metricls.artifacts import write_bytes
from metricls.errors import InputError, MetriclsError

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def find_chromium() -> str:
    """Path of the Chromium binary on PATH; a clear error naming the install command if none."""
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    raise MetriclsError("headless Chromium is needed to render the report and was not found "
                        f"on PATH (looked for {', '.join(CHROMIUM_NAMES)}); install it with "
                        "`apt-get install chromium`")


def screenshot_html(html: str | Path, png: str | Path, *, width: int = 1280,
                    height: int = 2000, timeout: float = 120.0) -> Path:
    """Render a local HTML file in headless Chromium and save the top `width` x `height` px.

    Chromium takes the screenshot once the page has loaded, images included. It runs with a
    throw-away profile and no network services; the PNG is written atomically.

    Returns:
        The PNG path.

    Raises:
        InputError: `html` is not a file.
        MetriclsError: Chromium is missing, failed or timed out.
    """
    page = Path(html).resolve()
    if not page.is_file():
        raise InputError(f"{page}: no such HTML file to screenshot")
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="metricls-chromium-") as tmp:
        shot = Path(tmp) / "screenshot.png"
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}",
                   f"--screenshot={shot}", f"--window-size={width},{height}", page.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise MetriclsError(f"{chromium}: no screenshot of {page} within {timeout:.0f} s") \
                from None
        if not shot.is_file() or shot.stat().st_size == 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise MetriclsError(f"{chromium} exited with {done.returncode} and no screenshot of "
                                f"{page}: {last}")
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(png, shot.read_bytes())
    return Path(png)
