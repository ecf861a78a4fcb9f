"""A million real short texts from Debian's package descriptions, for the recall benchmark.

    python scripts/make_debian_texts.py --releases bookworm,bullseye,trixie \\
        --cache debian-i18n --out debian-texts.txt
    metricls bench recall --tagger index/debtags-lexical --texts debian-texts.txt --matched

Debian translates its package descriptions into some 37 languages; each release lists its
`main/i18n/Translation-*` files in its Release file. This script fetches them into `--cache`
(once; files already there are kept) and writes one text per line: `<package> <one-line
description>` and `<package> <paragraph of the long description>`, for every language and
release, whitespace collapsed, cut at 400 characters, each distinct text once, in the order
of the sorted files. Three releases give 1,027,172 texts.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from make_debtags import paragraphs, read_index, write_files

MIRROR = "http://deb.debian.org/debian/dists"
MAX_CHARS = 400


def translation_files(release: str) -> list[str]:
    """The main/i18n Translation files a release's Release file lists (one per language)."""
    listed = re.findall(r"\s(main/i18n/Translation-[A-Za-z_]+(?:\.bz2|\.xz))$",
                        read_index(f"{MIRROR}/{release}/Release"), flags=re.M)
    chosen: dict[str, str] = {}
    for path in sorted(set(listed)):  # one compression per language: .bz2, else .xz
        chosen.setdefault(path.rsplit(".", 1)[0], path)
    return sorted(chosen.values())


def fetch(releases: list[str], cache: Path) -> list[Path]:
    """Download the releases' Translation files into cache/<release>/ (kept ones are reused)."""
    files = []
    for release in releases:
        folder = cache / release
        folder.mkdir(parents=True, exist_ok=True)
        for path in translation_files(release):
            target = folder / Path(path).name
            if not target.exists():
                partial = target.with_name(target.name + ".part")
                urllib.request.urlretrieve(f"{MIRROR}/{release}/{path}", partial)
                partial.replace(target)
            files.append(target)
    return sorted(files)


def texts_of(translation: str) -> Iterator[str]:
    """`<package> <summary>` and `<package> <paragraph>` for each description of a file."""
    for para in paragraphs(translation):
        field = next((k for k in para if k.startswith("Description-")
                      and k != "Description-md5"), None)
        if "Package" not in para or field is None:
            continue
        summary, *lines = para[field].split("\n")
        chunks, current = [summary], []
        for line in [*lines, " ."]:
            if line.strip() == ".":
                chunks += [" ".join(current)] if current else []
                current = []
            else:
                current.append(line.strip())
        for chunk in chunks:
            yield " ".join(f"{para['Package']} {chunk}".split())[:MAX_CHARS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--releases", default="bookworm,bullseye,trixie")
    parser.add_argument("--cache", type=Path, required=True,
                        help="folder for the downloaded Translation files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    files = fetch([r for r in args.releases.split(",") if r], args.cache)
    seen: dict[str, None] = {}
    for path in files:
        for text in texts_of(read_index(str(path))):
            seen.setdefault(text)
    write_files({args.out: "".join(f"{t}\n" for t in seen).encode()})
    print(f"{len(seen)} texts from {len(files)} files -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
