"""Write docs/configuration.md, the configuration reference, from metricls/config.py.

Usage: python scripts/config_reference.py [--check]
  --check: write nothing; exit 1 when docs/configuration.md is not up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's metricls, not another installed copy

from metricls.config_docs import COMMAND, DOC_PATH, config_reference  # noqa: E402


def main(argv: list[str]) -> int:
    path, text = ROOT / DOC_PATH, config_reference()
    if argv == ["--check"]:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return 0
        print(f"{DOC_PATH} is out of date: run `{COMMAND}`", file=sys.stderr)
        return 1
    if argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
