"""Rebuild metricls/datasets/debtags-bookworm.jsonl.gz from Debian package indexes.

    python scripts/make_debtags.py --packages Packages.xz --translations Translation-en.bz2 \\
        --out metricls/datasets/debtags-bookworm.jsonl.gz

Inputs are local paths or http(s) URLs, plain or .xz/.gz/.bz2. Output: one JSON object per line,
`{"package", "section", "summary", "description", "labels"}`, sorted by package (or, with
--index-order, in the Packages index order, as the shipped file is); packages without tags are
skipped, `special::*` bookkeeping tags dropped, `facet::{a,b}` tags expanded, labels
sorted. The description is the long description as one paragraph (lines stripped and joined by
a space, " ." separators dropped); sections lose their `contrib/`-style component prefix.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import os
import re
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

_DECOMPRESS = {".xz": lzma.decompress, ".gz": gzip.decompress, ".bz2": bz2.decompress}


def read_index(source: str) -> str:
    """Text of a (possibly compressed) local or remote index file."""
    if re.match(r"https?://", source):
        with urllib.request.urlopen(source, timeout=60) as resp:
            data = resp.read()
    else:
        data = Path(source).read_bytes()
    unpack = _DECOMPRESS.get(Path(source.split("?")[0]).suffix.lower())
    return (unpack(data) if unpack else data).decode("utf-8", errors="replace")


def paragraphs(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs as {field: value}; continuation lines are kept after a newline."""
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        key = None
        for line in block.split("\n"):
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line
            elif ":" in line and not line.startswith("#"):
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        if fields:
            yield fields


def expand_braces(tag: str) -> list[str]:
    """`works-with::{image,text}` -> ["works-with::image", "works-with::text"] (recursively)."""
    match = re.search(r"\{([^{}]*)\}", tag)
    if not match:
        return [tag]
    head, tail = tag[: match.start()], tag[match.end():]
    return [tag for part in match.group(1).split(",")
            for tag in expand_braces(head + part.strip() + tail)]


def parse_tags(value: str) -> list[str]:
    """The Tag field as sorted unique labels, braces expanded, `special::*` dropped."""
    flat = " ".join(value.split())
    tags = [t for raw in re.split(r",(?![^{]*\})", flat) for t in expand_braces(raw.strip()) if t]
    return sorted({t for t in tags if "::" in t and not t.startswith("special::")})


def parse_description(value: str) -> tuple[str, str]:
    """(summary, long description as one paragraph) of a Description(-en) field."""
    first, *rest = value.split("\n")
    lines = [line.strip() for line in rest]
    return first.strip(), " ".join(line for line in lines if line and line != ".")


def build_records(packages: list[str], translations: list[str],
                  index_order: bool = False) -> list[dict]:
    """One record per tagged package (first occurrence wins), sorted by package."""
    long: dict[tuple[str, str], str] = {}
    for source in translations:
        for para in paragraphs(read_index(source)):
            if "Package" in para and "Description-en" in para:
                for md5 in (para.get("Description-md5", ""), ""):  # "" = by name only
                    long.setdefault((para["Package"], md5), para["Description-en"])
    records: dict[str, dict] = {}
    for source in packages:
        for para in paragraphs(read_index(source)):
            name, labels = para.get("Package"), parse_tags(para.get("Tag", ""))
            if not name or not labels or name in records:
                continue
            text = long.get((name, para.get("Description-md5", "")), para.get("Description", ""))
            summary, description = parse_description(text)
            records[name] = {"package": name, "section": para.get("Section", "").split("/")[-1],
                             "summary": summary, "description": description, "labels": labels}
    return list(records.values()) if index_order else [records[n] for n in sorted(records)]


def write_jsonl_gz(records: list[dict], out: Path) -> None:
    """Write records atomically (temp file + os.replace), byte-identical for the same input."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                       mtime=0) as fh:
            for rec in records:
                fh.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", nargs="+", required=True,
                        help="Packages index file(s) or URL(s) with Tag: fields")
    parser.add_argument("--translations", nargs="*", default=[],
                        help="Translation-en file(s) or URL(s) with long descriptions")
    parser.add_argument("--out", type=Path, required=True, help="output .jsonl.gz")
    parser.add_argument("--index-order", action="store_true",
                        help="keep the Packages index order instead of sorting by package")
    args = parser.parse_args(argv)
    try:
        records = build_records(args.packages, args.translations, args.index_order)
    except (OSError, ValueError, lzma.LZMAError, EOFError) as exc:
        print(f"make_debtags: {exc}", file=sys.stderr)
        return 1
    write_jsonl_gz(records, args.out)
    n_labels = len({t for r in records for t in r["labels"]})
    print(f"wrote {len(records)} packages, {n_labels} labels to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
