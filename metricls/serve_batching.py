"""Micro-batching for the service: concurrent requests tagged together in one call.

Tagging a batch costs little more than tagging one text (the searches, the features and the
trees are vectorised), so the service joins the requests that arrive while a batch is being
tagged. There is no batching thread and no timer: the first request to arrive tags at once,
with whatever else is waiting; requests that arrive meanwhile queue, and when the batch is
done the oldest of them tags the next batch, its own and the others' queued since. A lone
request therefore waits for nothing, and under load the batches grow by themselves.

Requests are grouped by what they ask (`key`: k and threshold); each group is one call of
`run`, and each request gets back exactly its own rows. When a group's call fails, its
requests are tagged one by one, so a bad request fails alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from metricls.validation import check_positive_int

Run = Callable[[Hashable, Any], list]  # (key, inputs of several requests) -> one row per input


class _Job:
    """One request: its key and inputs, then its rows or its error."""

    __slots__ = ("error", "finished", "inputs", "key", "rows", "wake")

    def __init__(self, key: Hashable, inputs: Sequence | np.ndarray) -> None:
        self.key, self.inputs = key, inputs
        self.rows: list | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.wake = threading.Event()  # set when finished, or when it is to tag the next batch


class MicroBatcher:
    """Joins concurrent calls of `run` into batches (see the module doc).

    Args:
        run: ``run(key, inputs) -> rows``, one row per input; inputs are a list (texts) or a
            2-d array (vectors), the requests' inputs joined in arrival order.
        max_items: most inputs per batch (a request larger than this is tagged alone).
    """

    def __init__(self, run: Run, max_items: int = 256) -> None:
        self._run = run
        self.max_items = check_positive_int(max_items, "max_items")
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._busy = False  # a thread is tagging a batch, or has been woken to
        self.batches = 0  # calls of `run` so far, for tests and logs

    def __call__(self, key: Hashable, inputs: Sequence | np.ndarray) -> list:
        """The rows of `inputs` under `key`, tagged in a batch with concurrent calls."""
        job = _Job(key, inputs)
        with self._lock:
            self._queue.append(job)
            lead = not self._busy
            self._busy = True
        if not lead:
            job.wake.wait()
        if not job.finished:  # this thread tags the next batch, its own job among it
            self._tag_next()
        if job.error is not None:
            raise job.error
        return job.rows

    def _tag_next(self) -> None:
        """Tag the oldest queued jobs (up to `max_items` inputs), then wake the next leader."""
        with self._lock:
            take, size = 0, 0
            for job in self._queue:
                if take and size + len(job.inputs) > self.max_items:
                    break
                take, size = take + 1, size + len(job.inputs)
            jobs, self._queue = self._queue[:take], self._queue[take:]
        try:
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                self._tag_group(key, group)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].wake.set()  # the oldest waiting job leads the next batch
                else:
                    self._busy = False
            for job in jobs:
                if job.rows is None and job.error is None:  # the batch itself failed
                    job.error = RuntimeError("the batch this request was in failed")
                job.finished = True
                job.wake.set()

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
            except BaseException as exc:  # re-raised in the job's own thread
                job.error = exc
