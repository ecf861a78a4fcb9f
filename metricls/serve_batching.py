"""Micro-batching for the service: concurrent requests tagged together in one call.

Tagging a batch costs little more than tagging one text (the searches, the features and the
trees are vectorised), so the service joins the requests that arrive while a batch is being
tagged. A request costs no thread of its own: it is queued and awaited on the event loop, and
one tagging thread takes the queue a batch at a time until it is empty. There is no timer: a
request that finds the tagging thread idle starts it at once; requests that arrive meanwhile
make the next batch. A lone request therefore waits for nothing, and under load the batches
grow by themselves. (The earlier design, a worker thread per request taking turns to tag,
spent much of a core on threads waking each other and queuing for the GIL.) Each answer goes
back through its request's own event loop, so requests from several loops (a test client's)
are served too.

Requests are grouped by what they ask (`key`: k and threshold); each group is one call of
`run`, and each request gets back exactly its own rows. When a group's call fails, its
requests are tagged one by one, so a bad request fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from metricls.validation import check_positive_int

log = logging.getLogger(__name__)
Run = Callable[[Hashable, Any], list]  # (key, inputs of several requests) -> one row per input


class _Job:
    """One request: its key and inputs, then its rows or its error, and where to answer."""

    __slots__ = ("error", "future", "inputs", "key", "loop", "rows")

    def __init__(self, key: Hashable, inputs: Sequence | np.ndarray,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.key, self.inputs, self.loop = key, inputs, loop
        self.future = loop.create_future()
        self.rows: list | None = None
        self.error: BaseException | None = None

    def answer(self) -> None:
        """On the job's event loop: its rows, or its error (unless it was cancelled)."""
        if self.future.done():  # cancelled: its client went away
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        elif self.rows is None:
            self.future.set_exception(RuntimeError("the batch this request was in failed"))
        else:
            self.future.set_result(self.rows)


class MicroBatcher:
    """Joins concurrent awaits of `run` into batches (see the module doc).

    Args:
        run: ``run(key, inputs) -> rows``, one row per input; inputs are a list (texts) or a
            2-d array (vectors), the requests' inputs joined in arrival order. It runs in the
            batcher's own thread.
        max_items: most inputs per batch (a request larger than this is tagged alone).
    """

    def __init__(self, run: Run, max_items: int = 256) -> None:
        self._run = run
        self.max_items = check_positive_int(max_items, "max_items")
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._busy = False  # the tagging thread is draining the queue
        # its thread ends when the batcher is dropped (and at exit): nothing to close
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="metricls-tag")
        self.batches = 0  # calls of `run` so far, for tests and logs

    async def __call__(self, key: Hashable, inputs: Sequence | np.ndarray) -> list:
        """The rows of `inputs` under `key`, tagged in a batch with concurrent calls."""
        job = _Job(key, inputs, asyncio.get_running_loop())
        with self._lock:
            self._queue.append(job)
            idle, self._busy = not self._busy, True
        if idle:
            self._thread.submit(self._drain)
        return await job.future

    def _drain(self) -> None:
        """In the tagging thread: tag the oldest queued jobs (up to `max_items` inputs), answer
        them, and go on until the queue is empty."""
        while True:
            with self._lock:
                if not self._queue:
                    self._busy = False
                    return
                take, size = 0, 0
                for job in self._queue:
                    if take and size + len(job.inputs) > self.max_items:
                        break
                    take, size = take + 1, size + len(job.inputs)
                jobs, self._queue = self._queue[:take], self._queue[take:]
            try:
                self._tag(jobs)
            except BaseException:  # its jobs are answered that their batch failed; the next
                log.exception("tagging a batch of %d requests failed", len(jobs))  # goes on
            for job in jobs:
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    job.loop.call_soon_threadsafe(job.answer)

    def _tag(self, jobs: list[_Job]) -> None:
        """One call per group of jobs with the same key."""
        groups: dict[Hashable, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.key, []).append(job)
        for key, group in groups.items():
            self._tag_group(key, group)
    def _tag_group(self, key: Hashable, group: list[_Job]) -> None:
        """One call for the group; on failure, one call per job (each keeps its own error)."""
        if len(group) > 1:
            try:
                joined = (np.concatenate([np.asarray(j.inputs) for j in group])
                          if all(isinstance(j.inputs, np.ndarray) for j in group)
                          else [x for j in group for x in j.inputs])
                rows = self._run(key, joined)
                if len(rows) != len(joined):
                    raise ValueError("run returned another number of rows than inputs")
            except Exception:  # retried one by one below, where each job keeps its own error
                rows = None
            if rows is not None:
                self.batches += 1
                start = 0
                for job in group:
                    job.rows, start = rows[start:start + len(job.inputs)], start + len(job.inputs)
                return
        for job in group:
            try:
                self.batches += 1
                job.rows = self._run(key, job.inputs)
            except BaseException as exc:  # answered on the loop, to this job alone
                job.error = exc
