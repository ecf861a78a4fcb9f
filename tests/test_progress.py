"""Progress bars: drawn on a terminal, silent with --quiet and in non-interactive logs."""

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios

from metricls import Tagger
from metricls.data.dataset import read_config_items
from metricls.evaluation import evaluate
from metricls.progress import set_quiet

BAR = re.compile(r"\d+%\|")  # tqdm's "  50%|#####     |"


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_evaluate_draws_a_bar_only_on_a_terminal(tiny_tagger_dir, monkeypatch, capsys):
    monkeypatch.delenv("METRICLS_QUIET")
    tagger = Tagger.load(tiny_tagger_dir)
    items = read_config_items(tagger.config.data).subset("test")
    evaluate(tagger, items)
    assert capsys.readouterr().err == ""  # a log file or pipe gets no bar at all
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate(tagger, items)
    # a fast run may close (and clear) the bar before it redraws past 0%
    assert re.search(r"tag: +\d+%\|", terminal.getvalue())
    set_quiet(True)  # what --quiet does
    drawn = terminal.getvalue()
    evaluate(tagger, items)
    assert terminal.getvalue() == drawn


def _run_on_terminal(args: list[str]) -> str:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return what it showed."""
    controller, terminal = pty.openpty()
    # 40 rows x 120 columns: tqdm draws nothing on a terminal of width 0
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {key: value for key, value in os.environ.items() if key != "METRICLS_QUIET"}
    proc = subprocess.Popen([sys.executable, "-m", "metricls.cli", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = []
    while True:
        try:
            chunk = os.read(controller, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown.append(chunk)
    os.close(controller)
    assert proc.wait(timeout=300) == 0, b"".join(shown).decode(errors="replace")
    return b"".join(shown).decode(errors="replace")


def test_cli_bars_on_a_terminal_and_none_with_quiet(tiny_tagger_dir, tmp_path):
    args = ["report", str(tiny_tagger_dir), "--split", "test", "--min-support", "3", "--out"]
    shown = _run_on_terminal([*args, str(tmp_path / "a")])
    assert re.search(r"tag: +\d+%\|", shown) and re.search(r"report: +\d+%\|", shown)
    quiet = _run_on_terminal(["--quiet", *args, str(tmp_path / "b")])
    assert not BAR.search(quiet) and "\r" not in quiet.replace("\r\n", "\n")
    assert f"report: {tmp_path / 'b' / 'index.html'}" in quiet
