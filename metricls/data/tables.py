"""Raw tables: JSONL (line by line), CSV and Parquet read into records that know their line or
row, so every problem can name the file, the line or row, and the field."""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import json
import re
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from metricls.errors import InputError
from metricls.validation import describe, file_problem

FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
            ".json.gz": "jsonl", ".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet"}
SUPPORTED_SUFFIXES = tuple(FORMATS)
MISSING = object()  # a JSONL field absent from one line
CHUNK = 1 << 18  # bytes read at a time from a (decompressed) text file
_NON_BLANK = re.compile(rb"\S")


@dataclass
class Table:
    source: str
    kind: str  # "jsonl", "csv" or "parquet"
    columns: list[str]
    records: list[dict] | pd.DataFrame
    lines: list[int] = field(default_factory=list)  # JSONL line of each record
    first_row: int = 0  # rows of the file before this block (see `iter_tables`)

    def __len__(self) -> int:
        return len(self.records)

    def at(self, i: int) -> str:
        return f"line {self.lines[i]}" if self.kind == "jsonl" else \
            f"row {self.first_row + i + 1}"

    def where(self, i: int) -> str:
        return f"{self.source}:{self.lines[i]}" if self.kind == "jsonl" else \
            f"{self.source}: {self.at(i)}"

    def error(self, i: int, col: str, msg: str) -> InputError:
        word = "field" if self.kind == "jsonl" else "column"
        return InputError(f"{self.where(i)}: {word} {col!r} {msg}")

    def column(self, col: str) -> list:
        if col not in self.columns:
            near = difflib.get_close_matches(col, self.columns, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            shown = ", ".join(repr(c) for c in self.columns[:30]) or "none"
            raise InputError(f"{self.source}: no column {col!r} (available: {shown}){hint}")
        if isinstance(self.records, pd.DataFrame):
            return self.records[col].tolist()
        return [r.get(col, MISSING) for r in self.records]


def check_regular_file(path: Path, source: str, missing: str = "no such file") -> Path:
    """`path` if it is a regular file (or a link to one), else InputError naming what it is
    (`missing` when nothing is there)."""
    problem = file_problem(path, missing)
    if problem:
        raise InputError(f"{source}: {problem}")
    return path


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_bytes(path: Path, source: str) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{source}: cannot read the file ({first_line(exc)})") from exc


def _decode(data: bytes, source: str, offset_line: int = 1) -> str:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + offset_line
        raise InputError(f"{source}:{line}: invalid UTF-8 byte 0x{data[exc.start]:02x}; "
                         f"save the file as UTF-8") from exc


def read_lines(path: Path, source: str) -> Iterator[str]:
    """The non-blank lines of a (possibly gzipped) UTF-8 text file, read as a stream (split as
    `str.splitlines` splits them); errors name the file (and line)."""
    for lineno, raw in _raw_lines(path, source):
        yield from _decode(raw, source, lineno).splitlines()


def _raw_lines(path: Path, source: str) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its b"\\n") of every line that is not blank (ASCII
    whitespace only), read as a stream of chunks, gunzipped by suffix: a run of blank lines
    costs neither memory nor a Python step per line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            yield from _non_blank_lines(iter(lambda: fh.read(CHUNK), b""))
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{source}: cannot read the file ({first_line(exc)})") from exc


def _non_blank_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines of the bytes `chunks` joined."""
    lineno, pieces = 1, []  # pieces: the start of the line the chunks so far end in
    for chunk in chunks:
        if b"\n" not in chunk:
            pieces.append(chunk)
            continue
        data = b"".join([*pieces, chunk]) if pieces else chunk
        end = data.rfind(b"\n") + 1
        yield from _lines_in(data, end, lineno)
        lineno += data.count(b"\n")
        pieces = [data[end:]] if end < len(data) else []
    if pieces:
        yield from _lines_in(b"".join(pieces), None, lineno)


def _lines_in(data: bytes, end: int | None, lineno: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines of ``data[:end]``, whose first line is
    `lineno`; a last line without b"\\n" ends at `end`."""
    end = len(data) if end is None else end
    pos = 0
    while (found := _NON_BLANK.search(data, pos, end)) is not None:
        start = data.rfind(b"\n", 0, found.start()) + 1
        stop = data.find(b"\n", found.start(), end)
        stop = end if stop < 0 else stop
        lineno += data.count(b"\n", pos, start)
        yield lineno, data[start:stop]
        pos = stop


def _jsonl_records(lines: Iterable[tuple[int, bytes]],
                   source: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of (line number, bytes) `lines`."""
    for lineno, raw in lines:
        text = _decode(raw, source, lineno)
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = (f"invalid JSON ({exc.msg} at column {exc.colno})"
                   if lineno > 1 or not text.lstrip().startswith("[") else
                   "expected JSON Lines (one object per line), found a JSON array")
            raise InputError(f"{source}:{lineno}: {msg}") from exc
        except RecursionError as exc:
            raise InputError(f"{source}:{lineno}: invalid JSON (nested too deeply)") from exc
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise InputError(f"{source}:{lineno}: invalid JSON ({first_line(exc)})") from exc
        if not isinstance(obj, dict):
            raise InputError(f"{source}:{lineno}: expected a JSON object per line, got "
                             f"{describe(obj)}")
        yield lineno, obj


def _read_jsonl(path: Path, source: str) -> Table:
    return next(_jsonl_blocks(_raw_lines(path, source), source, None),
                Table(source, "jsonl", [], []))


def _jsonl_blocks(lines: Iterable[tuple[int, bytes]], source: str,
                  rows: int | None) -> Iterator[Table]:
    """Tables of `rows` records (None: all); columns = every field seen so far in the file."""
    records: list[dict] = []
    numbers: list[int] = []
    columns: dict[str, None] = {}
    for lineno, obj in _jsonl_records(lines, source):
        records.append(obj)
        numbers.append(lineno)
        columns.update(dict.fromkeys(obj))
        if len(records) == rows:
            yield Table(source, "jsonl", list(columns), records, numbers)
            records, numbers = [], []
    if records:
        yield Table(source, "jsonl", list(columns), records, numbers)


def _csv_problem(text: str, exc: Exception) -> str:
    """The first data row whose field count differs from the header's, else pandas' reason."""
    try:
        rows = (row for row in csv.reader(io.StringIO(text)) if row)  # pandas skips blank lines
        width = len(next(rows))
        for n, row in enumerate(rows, 1):
            if len(row) != width:
                return f": row {n}: expected {width} fields (as in the header), found {len(row)}"
    except (csv.Error, StopIteration):
        pass
    return f": cannot parse as CSV ({first_line(exc)})"


def _read_csv(path: Path, source: str) -> Table:
    """The whole CSV, parsed from a stream; on a problem the text is read whole to name its
    line or row."""
    lines = _raw_lines(path, source)
    blank = next(lines, None) is None
    lines.close()
    if blank:
        return Table(source, "csv", [], [])
    try:
        header, df = _parse_csv(path)
    except Exception as exc:  # bad UTF-8, pandas/csv parser errors of any kind
        text = _decode(_read_bytes(path, source), source)
        raise InputError(source + _csv_problem(text, exc)) from exc
    dup = next((h for h in header if header.count(h) > 1), None)
    if dup is not None:
        raise InputError(f"{source}:1: column {dup!r} appears twice in the header")
    df.columns = [str(c) for c in df.columns]
    return Table(source, "csv", list(df.columns), df)


def _parse_csv(path: Path) -> tuple[list[str], pd.DataFrame]:
    """The header and the rows of a (possibly gzipped) CSV, read as a stream."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        header = next((row for row in csv.reader(fh) if row), [])  # pandas skips blank lines
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh, \
            warnings.catch_warnings():  # a long first row only warns, and loses data
        warnings.simplefilter("error", pd.errors.ParserWarning)
        df = pd.read_csv(fh, dtype=str, keep_default_na=False, na_filter=False, index_col=False)
    return header, df


def _read_parquet(path: Path, source: str) -> Table:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow errors of any kind
        raise InputError(f"{source}: cannot read as Parquet ({first_line(exc)})") from exc
    df.columns = [str(c) for c in df.columns]
    return Table(source, "parquet", list(df.columns), df)


def _parquet_blocks(path: Path, source: str, rows: int) -> Iterator[Table]:
    import pyarrow.parquet as pq

    first = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            df = batch.to_pandas()
            df.columns = [str(c) for c in df.columns]
            yield Table(source, "parquet", list(df.columns), df, first_row=first)
            first += len(df)
    except Exception as exc:  # pyarrow errors of any kind
        raise InputError(f"{source}: cannot read as Parquet ({first_line(exc)})") from exc


def _format(path: Path, source: str) -> str:
    name = path.name.lower()
    suffix = max((s for s in FORMATS if name.endswith(s)), key=len, default=None)
    if suffix is None:
        raise InputError(f"{source}: unsupported file type (supported: "
                         f"{', '.join(SUPPORTED_SUFFIXES)})")
    return FORMATS[suffix]


def _csv_blocks(path: Path, source: str, rows: int) -> Iterator[Table]:
    whole = _read_csv(path, source)  # parsed whole: its checks need the full text
    for i in range(0, len(whole), rows):
        yield Table(source, "csv", whole.columns, whole.records.iloc[i:i + rows], first_row=i)


def _non_empty(blocks: Iterator[Table], source: str) -> Iterator[Table]:
    empty = True
    for table in blocks:
        empty = False
        yield table
    if empty:
        raise InputError(f"{source}: the file has no rows")


def iter_tables(path: Path, source: str, rows: int) -> Iterator[Table]:
    """The table in blocks of at most `rows` records; errors name lines/rows of the whole file.

    JSONL and Parquet are streamed; CSV is parsed whole, then sliced. An unsupported suffix
    fails at the call, everything else as the blocks are read.
    """
    kind = _format(path, source)
    if kind == "jsonl":
        blocks = _jsonl_blocks(_raw_lines(path, source), source, rows)
    elif kind == "csv":
        blocks = _csv_blocks(path, source, rows)
    else:
        blocks = _parquet_blocks(path, source, rows)
    return _non_empty(blocks, source)


def read_table(path: Path, source: str) -> Table:
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    table = readers[_format(path, source)](path, source)
    if len(table) == 0:
        raise InputError(f"{source}: the file has no rows")
    return table
