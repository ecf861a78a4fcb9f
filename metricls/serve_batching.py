"""Micro-batching for the service: concurrent requests tagged together in one call.

Tagging a batch costs little more than tagging one text (the searches, the features and the
trees are vectorised), so the service joins the requests that arrive while a batch is being
tagged. Requests are awaited on the event loop; the tagging itself runs in one thread of its
own, one batch at a time. There is no timer: a request that finds the tagging thread idle
starts a batch at once, with whatever else is queued; requests that arrive meanwhile queue,
and when the batch is done the queued ones are the next batch. A lone request therefore waits
for nothing, and under load the batches grow by themselves.

Everything but the tagging runs on the event loop, so the queue needs no lock, and a request
costs no thread of its own: one hand-over to the tagging thread serves a whole batch (the
earlier design, a worker thread per request taking turns to tag, spent much of a core on
threads waking each other and queuing for the GIL).

Requests are grouped by what they ask (`key`: k and threshold); each group is one call of
`run`, and each request gets back exactly its own rows. When a group's call fails, its
requests are tagged one by one, so a bad request fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from metricls.validation import check_positive_int

Run = Callable[[Hashable, Any], list]  # (key, inputs of several requests) -> one row per input


class _Job:
    """One request: its key and inputs, then its rows or its error."""

    __slots__ = ("error", "future", "inputs", "key", "rows")

    def __init__(self, key: Hashable, inputs: Sequence | np.ndarray,
                 future: asyncio.Future) -> None:
        self.key, self.inputs, self.future = key, inputs, future
        self.rows: list | None = None
        self.error: BaseException | None = None


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
        self._queue: list[_Job] = []
        self._busy = False  # a batch is in the tagging thread
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="metricls-tag")
        self.batches = 0  # calls of `run` so far, for tests and logs

    async def __call__(self, key: Hashable, inputs: Sequence | np.ndarray) -> list:
        """The rows of `inputs` under `key`, tagged in a batch with concurrent calls."""
        loop = asyncio.get_running_loop()
        job = _Job(key, inputs, loop.create_future())
        self._queue.append(job)
        if not self._busy:
            self._start_next(loop)
        return await job.future

    def close(self) -> None:
        """Let the tagging thread end once its batch is done."""
        self._thread.shutdown(wait=False)

    def _start_next(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the oldest queued jobs (up to `max_items` inputs) to the tagging thread."""
        take, size = 0, 0
        for job in self._queue:
            if take and size + len(job.inputs) > self.max_items:
                break
            take, size = take + 1, size + len(job.inputs)
        jobs, self._queue = self._queue[:take], self._queue[take:]
        self._busy = True
        done = loop.run_in_executor(self._thread, self._tag, jobs)
        done.add_done_callback(lambda finished: self._finish(loop, jobs, finished))

    def _finish(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job],
                finished: asyncio.Future) -> None:
        """On the loop, once a batch is tagged: answer its jobs, start the next batch."""
        self._busy = False
        failed = finished.cancelled() or finished.exception() is not None
        for job in jobs:
            if job.future.done():  # the request was cancelled (its client went away)
                continue
            if job.error is not None:
                job.future.set_exception(job.error)
            elif failed or job.rows is None:
                job.future.set_exception(RuntimeError("the batch this request was in failed"))
            else:
                job.future.set_result(job.rows)
        if self._queue:
            self._start_next(loop)

    def _tag(self, jobs: list[_Job]) -> None:
        """In the tagging thread: one call per group of jobs with the same key."""
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
            except Exception as exc:  # answered on the loop, to this job alone
                job.error = exc
