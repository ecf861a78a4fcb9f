"""tag_catalog: tag every item of a table file into Parquet, in this process or on Ray actors.

Both engines run the same code on the same blocks: `read_blocks` cuts the file into blocks of
`batch_size` items (the project's reader, so columns mean what they mean in training and
errors name the file's line or row), and one `TagBatch` per process (per Ray actor) loads the
tagger once and turns each block into rows ``row, id, labels, scores[, embedding]``. The output
folder holds ``part-<first row>.parquet`` files, so reading it gives the input order, and
``_catalog.json`` (skipped by Parquet readers) describing the run.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metricls.artifacts import write_json
from metricls.config import DataConfig
from metricls.data.items import Items, iter_items, resolve_dataset, shown_path
from metricls.data.splits import md5_split
from metricls.errors import InputError, MetriclsError
from metricls.outputs import check_output
from metricls.pipeline.tag import named, score, selection
from metricls.progress import progress
from metricls.staging import staged_dir
from metricls.validation import check_k

if TYPE_CHECKING:  # torch loads with the tagger: Ray's reading worker never needs it
    from metricls.tagger import Tagger

ENGINES = ("local", "ray")
SUMMARY = "_catalog.json"  # a leading "_" makes Parquet dataset readers skip it


@dataclass(frozen=True)
class TagOptions:
    """What each item gets, and how the work is cut.

    Args:
        k: at most this many tags per item.
        threshold: None (k tags), a number (scores >= it) or "tuned" (per-label thresholds).
        batch_size: items per block (and per call of the tagger).
        embeddings: also store each item's (d,) float32 embedding.
        num_actors: Ray actors, each holding one tagger (`--engine ray` only).
        threads: blocks tagged at once in this process (`--engine local` only): the searches,
            trees and matrix products release the GIL, so two threads use two cores.
    """

    k: int = 10
    threshold: float | str | None = None
    batch_size: int = 1024
    embeddings: bool = False
    num_actors: int = 2
    threads: int = 2


def read_blocks(path: str | Path, data: DataConfig, rows: int) -> Iterator[pa.Table]:
    """The items of `path` in blocks of `rows`: columns row (input position), id, and text
    and/or features (a fixed-size float32 list), read with `data`'s column mapping."""
    if data.features_path:
        raise InputError("data.features_path: tag-catalog reads features from the catalog's "
                         "own columns (data.feature_columns / data.vector_column), not a .npy")
    blocks = iter_items(path, rows=rows, id_column=data.id_column,
                        text_columns=data.text_columns, feature_columns=data.feature_columns,
                        vector_column=data.vector_column)
    return _block_tables(blocks)


def _block_tables(blocks: Iterator[Items]) -> Iterator[pa.Table]:
    start = 0
    for items in blocks:
        columns = {"row": pa.array(np.arange(start, start + len(items)), pa.int64()),
                   "id": pa.array(items.ids, pa.string())}
        if items.texts is not None:
            columns["text"] = pa.array(items.texts, pa.string())
        if items.features is not None:
            columns["features"] = _fixed_lists(np.asarray(items.features, np.float32))
        start += len(items)
        yield pa.table(columns)


def _fixed_lists(x: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) float32 rows as an Arrow fixed_size_list<float32>[d] column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_list<float32>[d] column back as an (n, d) float32 array."""
    flat = column.combine_chunks()
    return flat.flatten().to_numpy().reshape(len(flat), flat.type.list_size)


class TagBatch:
    """Tags one block of `read_blocks`: loads the tagger once, then is called per block.

    Args:
        tagger: a loaded Tagger, or its folder (what each Ray actor gets).
        options: k, threshold and whether to keep embeddings.
    """

    def __init__(self, tagger: Tagger | str | Path, options: TagOptions) -> None:
        if isinstance(tagger, (str, Path)):
            from metricls.tagger import Tagger

            tagger = Tagger.load(tagger)
        self.tagger = tagger
        self.options = options

    def __call__(self, block: pa.Table) -> pa.Table:
        """Columns row, id, labels (list<string>), scores (list<float32>)[, embedding]."""
        ids = block.column("id").to_pylist()
        names = block.column_names
        items = Items(ids=ids, labels=None, split=md5_split(ids), source="catalog",
                      texts=block.column("text").to_pylist() if "text" in names else None,
                      features=_matrix(block.column("features")) if "features" in names else None)
        emb = self.tagger.embed(items)
        state = self.tagger.state  # one snapshot from scores to names
        k, cut = selection(self.options.k, self.options.threshold, state)
        tags = named(state, *score(state, emb, k, items.texts), self.options.threshold, cut)
        columns = {"row": block.column("row"), "id": block.column("id"),
                   "labels": pa.array([[name for name, _ in row] for row in tags],
                                      pa.list_(pa.string())),
                   "scores": pa.array([[score for _, score in row] for row in tags],
                                      pa.list_(pa.float32()))}
        if self.options.embeddings:
            columns["embedding"] = _fixed_lists(emb)
        return pa.table(columns)


def tag_catalog(tagger_dir: str | Path, data: str | Path, out: str | Path, *,
                engine: str = "local", options: TagOptions | None = None,
                overwrite: bool = False) -> dict[str, Any]:
    """Tag every item of a table file into a folder of Parquet files, in input order.

    Args:
        tagger_dir: a built tagger folder; its `data` config says which columns to read.
        data: the catalog, a JSONL(.gz), CSV or Parquet file (or "debtags").
        out: the output folder, written beside itself and renamed into place when complete.
        engine: "local" (this process) or "ray" (Ray Data, `options.num_actors` actors; starts
            a local Ray cluster unless one is already connected, and stops what it started).
        options: k, threshold, batch size, embeddings, actors (`TagOptions`).
        overwrite: replace an existing catalog folder `out` (never another kind of folder,
            one that holds the catalog or the tagger, or the current folder).

    Returns:
        The run's summary, also written as ``out/_catalog.json``: rows, seconds, items/s, ...

    Raises:
        InputError: a missing or unreadable catalog, a bad row or column (naming the file and
            the line or row), `out` already there without `overwrite`, Ray not installed.
    """
    from metricls.tagger import Tagger  # torch loads with it (see TYPE_CHECKING above)

    options = _checked(options or TagOptions(), engine)
    out = Path(out)
    source = resolve_dataset(data)
    check_output(out, "catalog", overwrite=overwrite, inputs=(source, tagger_dir))
    ray = _import_ray() if engine == "ray" else None
    start = time.perf_counter()
    tagger = Tagger.load(tagger_dir)
    selection(options.k, options.threshold, tagger.state)  # checks k and threshold now
    blocks = read_blocks(source, tagger.config.data, options.batch_size)
    first = next(blocks)  # a bad column or first row fails here, before any work
    with staged_dir(out, lambda: check_output(out, "catalog", overwrite=overwrite,
                                              inputs=(source, tagger_dir))) as tmp:
        if ray is None:
            rows = _tag_here(TagBatch(tagger, options), itertools.chain([first], blocks), tmp,
                             options.threads)
        else:
            blocks.close()  # Ray reads the file again, and each actor loads its own tagger
            _tag_on_ray(ray, Path(tagger_dir), (source, tagger.config.data), options, tmp)
            rows = _name_parts(tmp)
        seconds = time.perf_counter() - start
        summary = {"tagger": str(tagger_dir), "data": shown_path(source), "engine": engine,
                   "options": asdict(options), "rows": rows, "seconds": round(seconds, 3),
                   "items_per_s": round(rows / seconds, 1)}
        write_json(tmp / SUMMARY, summary)
    return summary


def read_tags(folder: str | Path) -> pa.Table:
    """The output of `tag_catalog` as one Arrow table, in input order."""
    table = pq.read_table(Path(folder))
    return table.sort_by("row")


def _checked(options: TagOptions, engine: str) -> TagOptions:
    if engine not in ENGINES:
        raise InputError(f"engine: expected one of {list(ENGINES)}, got {engine!r}")
    for name in ("k", "batch_size", "num_actors", "threads"):
        check_k(getattr(options, name), name)
    return options


def _part(first_row: int) -> str:
    return f"part-{first_row:012d}.parquet"


def _tag_here(tag: TagBatch, blocks: Iterator[pa.Table], folder: Path, threads: int) -> int:
    """The local engine: blocks tagged and written by `threads` threads, at most two per
    thread read ahead; returns the row count."""
    rows, pending = 0, collections.deque()

    def tag_and_write(block: pa.Table, path: Path) -> None:
        pq.write_table(tag(block), path)

    with ThreadPoolExecutor(threads, thread_name_prefix="metricls-tag") as pool:
        try:
            for block in progress(blocks, desc="tagging"):
                pending.append(pool.submit(tag_and_write, block, folder / _part(rows)))
                rows += len(block)
                if len(pending) >= 2 * threads:
                    pending.popleft().result()  # a failure stops the run here
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:  # after a failure: nothing more starts
                future.cancel()
    return rows


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("--engine ray needs Ray Data: pip install 'metricls[ray]' "
                         "(or use --engine local)") from None
    return ray


def _read_file(specs: dict[str, np.ndarray], data: DataConfig, rows: int) -> Iterator[pa.Table]:
    """Ray's read stage: the blocks of each file named in `specs` (one here)."""
    for path in specs["path"]:
        yield from read_blocks(str(path), data, rows)


def _tag_on_ray(ray: Any, tagger_dir: Path, catalog: tuple[Path, DataConfig],
                options: TagOptions, folder: Path) -> None:
    """The Ray engine: read in a task, re-cut into blocks of batch_size, tag on an actor pool,
    write Parquet into `folder`."""
    started = not ray.is_initialized()
    if started:  # $RAY_ADDRESS's cluster, else a local one: a CPU per actor, one for the rest
        local = {} if os.environ.get("RAY_ADDRESS") else {
            "num_cpus": options.num_actors + 1, "include_dashboard": False}
        ray.init(log_to_driver=False, logging_level=logging.ERROR, **local)
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    ray_log = logging.getLogger("ray.data")
    level = ray_log.level
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    ray_log.setLevel(logging.CRITICAL)  # its errors come back as our exception
    try:
        ds = ray.data.from_items([{"path": str(catalog[0].resolve())}])
        ds = ds.map_batches(_read_file, batch_size=None, num_cpus=0.5,
                            fn_kwargs={"data": catalog[1], "rows": options.batch_size})
        # the reader's blocks are merged on the way out: cut them back to batch_size rows
        ds = ds.repartition(target_num_rows_per_block=options.batch_size, strict=True)
        ds = ds.map_batches(TagBatch, batch_size=options.batch_size, batch_format="pyarrow",
                            fn_constructor_kwargs={"tagger": str(tagger_dir.resolve()),
                                                   "options": options},
                            compute=ray.data.ActorPoolStrategy(size=options.num_actors))
        ds.write_parquet(str(folder.resolve()))
    except ray.exceptions.RayError as exc:
        raise _cause(exc) from exc
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        ray_log.setLevel(level)
        if started:
            ray.shutdown()


def _cause(exc: BaseException) -> MetriclsError:
    """The metricls error inside a Ray error (a bad row met by a worker), else a MetriclsError
    naming what failed; one line either way (Ray appends lines about its retries)."""
    seen = exc
    while True:
        inner = getattr(seen, "cause", None)  # what a RayTaskError wraps
        if not isinstance(inner, BaseException):
            inner = None if isinstance(seen, MetriclsError) else seen.__cause__
        if inner is None:
            break
        seen = inner
    text = (str(seen).strip().splitlines() or [""])[0]
    if isinstance(seen, MetriclsError):
        return type(seen)(text)
    return MetriclsError(f"--engine ray failed: {type(seen).__name__}: {text} (--debug shows "
                         "the traceback)")


def _name_parts(folder: Path) -> int:
    """Rename Ray's part files after their first row, so that name order is input order;
    checks the parts hold rows 0..n-1 once each, in order, and returns n."""
    parts = []
    for path in folder.glob("*.parquet"):
        rows = pq.read_table(path, columns=["row"]).column("row").to_numpy()
        parts.append((int(rows[0]) if len(rows) else -1, path, rows))
    expected = 0
    for first, path, rows in sorted(parts, key=lambda part: part[0]):
        if len(rows) == 0:
            path.unlink()
            continue
        if not np.array_equal(rows, np.arange(expected, expected + len(rows))):
            raise MetriclsError(f"{path}: Ray wrote rows out of order (from {first}, expected "
                                f"{expected}); rerun, or use --engine local")
        path.rename(folder / _part(first))
        expected += len(rows)
    return expected
