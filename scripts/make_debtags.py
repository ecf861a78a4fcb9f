"""Rebuild metricls/datasets/debtags-bookworm.jsonl.gz (and its label table) from Debian files.

    python scripts/make_debtags.py --packages Packages.xz --translations Translation-en.bz2 \\
        --out metricls/datasets/debtags-bookworm.jsonl.gz \\
        --vocabulary debtags_2.1.5_all.deb --labels-out metricls/datasets/debtags-labels.jsonl

The label table comes from the `debtags` package's /usr/share/debtags/vocabulary (read straight
from the .deb, an `ar` archive, without installing it; `apt-get download debtags` fetches it),
or from that file itself: one `{"label", "description", "facet"}` line per tag, where the
description is the tag's one-line description, a full stop, and its long description as one
paragraph, and `facet` the one-line description of its facet.

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
import io
import json
import lzma
import os
import re
import sys
import tarfile
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


VOCABULARY = "usr/share/debtags/vocabulary"  # inside the debtags package


def read_vocabulary(source: str) -> str:
    """Text of the debtags vocabulary: from a .deb (its data.tar member) or the file itself."""
    data = Path(source).read_bytes()
    if not data.startswith(b"!<arch>\n"):
        return data.decode("utf-8", errors="replace")
    pos = 8
    while pos + 60 <= len(data):  # ar members: a 60-byte header, the body, padding to even
        name = data[pos:pos + 16].decode().strip().rstrip("/")
        size = int(data[pos + 48:pos + 58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for member in tar.getmembers():
                    if member.name.lstrip("./") == VOCABULARY:
                        return tar.extractfile(member).read().decode("utf-8", errors="replace")
            raise ValueError(f"{source}: no {VOCABULARY} in its data archive")
        pos += 60 + size + size % 2
    raise ValueError(f"{source}: a .deb without a data.tar member")


def label_records(vocabulary: str) -> list[dict]:
    """One `{"label", "description", "facet"}` per Tag paragraph, in the vocabulary's order."""
    facets, records = {}, []
    for para in paragraphs(vocabulary):
        short, long = parse_description(para.get("Description", ""))
        if "Facet" in para:
            facets[para["Facet"]] = short
        elif "Tag" in para and short:  # a tag without a description has nothing to add
            tag = para["Tag"]
            records.append({"label": tag,
                            "description": f"{short}. {long}".strip() if long else short,
                            "facet": facets.get(tag.split("::")[0], "")})
    return records


def jsonl(records: list[dict]) -> bytes:
    """Records as JSONL bytes."""
    return "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records).encode("utf-8")


def jsonl_gz(records: list[dict]) -> bytes:
    """Records as gzipped JSONL, byte-identical for the same input (no timestamp)."""
    return gzip.compress(jsonl(records), mtime=0)


def write_files(files: dict[Path, bytes]) -> None:
    """Each file's bytes to a temp file beside it, then every temp file into place with
    os.replace: a failure before the first replace leaves every target as it was."""
    temps: dict[Path, str] = {}
    try:
        for out, data in files.items():
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, temps[out] = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp",
                                              dir=out.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(temps[out], 0o644)  # mkstemp makes it private; a dataset is for all
        for out, tmp in temps.items():
            os.replace(tmp, out)
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", nargs="+", required=True,
                        help="Packages index file(s) or URL(s) with Tag: fields")
    parser.add_argument("--translations", nargs="*", default=[],
                        help="Translation-en file(s) or URL(s) with long descriptions")
    parser.add_argument("--out", type=Path, required=True, help="output .jsonl.gz")
    parser.add_argument("--index-order", action="store_true",
                        help="keep the Packages index order instead of sorting by package")
    parser.add_argument("--vocabulary", default=None,
                        help="the debtags .deb (or its usr/share/debtags/vocabulary file)")
    parser.add_argument("--labels-out", type=Path, default=None,
                        help="output label table .jsonl (with --vocabulary)")
    args = parser.parse_args(argv)
    if (args.vocabulary is None) != (args.labels_out is None):
        parser.error("--vocabulary and --labels-out go together")
    try:
        records = build_records(args.packages, args.translations, args.index_order)
        labels = label_records(read_vocabulary(args.vocabulary)) if args.vocabulary else None
    except (OSError, ValueError, lzma.LZMAError, EOFError, tarfile.TarError) as exc:
        print(f"make_debtags: {exc}", file=sys.stderr)
        return 1
    files = {args.out: jsonl_gz(records)} | ({args.labels_out: jsonl(labels)} if labels else {})
    try:
        write_files(files)
    except OSError as exc:
        print(f"make_debtags: {exc}", file=sys.stderr)
        return 1
    n_labels = len({t for r in records for t in r["labels"]})
    print(f"wrote {len(records)} packages, {n_labels} labels to {args.out}")
    if labels is not None:
        print(f"wrote {len(labels)} label descriptions to {args.labels_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
