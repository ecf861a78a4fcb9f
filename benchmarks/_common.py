"""What the harness scripts share: their argument parser's common flags, logging, and one
``error: ...`` line (exit 2 for bad input or config, 1 for other metricls errors), as the
`metricls` command line does."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from metricls.errors import ConfigError, InputError, MetriclsError
from metricls.progress import set_quiet

BENCHMARKS = Path(__file__).resolve().parent  # each harness writes into its own folder here


def harness_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of `doc` (a harness's docstring),
    with the flags every harness takes (--quiet, --verbose, --debug)."""
    description = " ".join((doc or "").split("\n\n")[0].split()) or None
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or progress lines")
    parser.add_argument("-v", "--verbose", action="store_true", help="INFO logs of every library")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def add_run_options(parser: argparse.ArgumentParser, out: Path, keeps: str) -> None:
    """The flags of a harness that trains its own taggers: --set (config overrides, repeated),
    --out (the JSON report, default `out`) and --workdir (where it keeps `keeps`)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override, e.g. index.backend=ivf")
    parser.add_argument("--out", type=Path, default=out, help="the JSON report")
    parser.add_argument("--workdir", type=Path, default=None,
                        help=f"keep {keeps} here (default: a temp folder)")


def run_harness(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                body: Callable[[argparse.Namespace], str]) -> int:
    """Parse `argv`, set up logging, run `body` and print the text it returns.

    Returns:
        The exit status: 0, or 2 (bad input or config) / 1 (other metricls error) after one
        ``error: ...`` line on stderr (a traceback with --debug).
    """
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    for name in ("metricls", "benchmarks"):  # progress lines show unless --quiet
        logging.getLogger(name).setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        text = body(args)
    except MetriclsError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (InputError, ConfigError)) else 1
    print(text)
    return 0


def metric_table(corner: str, keys: Sequence[str], rows: Sequence[tuple[str, dict]]) -> list[str]:
    """Markdown table lines: a header of `corner` and `keys`, then one line per (name, row),
    each key's value to 4 decimals."""
    return ([f"| {corner} | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
            + [f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |"
               for name, row in rows])
