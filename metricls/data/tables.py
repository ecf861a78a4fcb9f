"""Raw tables: JSONL (line by line), CSV and Parquet read into records that know their line or
row, so every problem can name the file, the line or row, and the field."""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import json
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


def read_text(path: Path, source: str) -> str:
    """A (possibly gzipped) UTF-8 text file's content; errors name the file (and line)."""
    return _decode(_read_bytes(path, source), source)


def _raw_lines(path: Path, source: str) -> Iterator[bytes]:
    """The file's lines without their b"\\n", read as a stream (gunzipped by suffix)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for raw in fh:
                yield raw.removesuffix(b"\n")
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{source}: cannot read the file ({first_line(exc)})") from exc


def _jsonl_records(lines: Iterable[bytes], source: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank JSON Lines line."""
    for lineno, raw in enumerate(lines, 1):
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
    return next(_jsonl_blocks(_read_bytes(path, source).split(b"\n"), source, None),
                Table(source, "jsonl", [], []))


def _jsonl_blocks(lines: Iterable[bytes], source: str, rows: int | None) -> Iterator[Table]:
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
    text = _decode(_read_bytes(path, source), source)
    if not text.strip():
        return Table(source, "csv", [], [])
    try:
        header = next(csv.reader(io.StringIO(text)), [])
        with warnings.catch_warnings():  # a long first row only warns, and loses data
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                             na_filter=False, index_col=False)
    except Exception as exc:  # pandas/csv parser errors of any kind
        raise InputError(source + _csv_problem(text, exc)) from exc
    dup = next((h for h in header if header.count(h) > 1), None)
    if dup is not None:
        raise InputError(f"{source}:1: column {dup!r} appears twice in the header")
    df.columns = [str(c) for c in df.columns]
    return Table(source, "csv", list(df.columns), df)


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
