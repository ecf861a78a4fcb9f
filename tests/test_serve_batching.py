"""MicroBatcher: concurrent awaits joined into batches, each caller getting exactly its rows."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from metricls.errors import InputError
from metricls.serve_batching import MicroBatcher


class SlowRun:
    """A `run` that takes a while (so callers queue) and records every call."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple] = []
        self.lock = threading.Lock()
        self.fail_on = fail_on

    def __call__(self, key, inputs):
        with self.lock:
            self.calls.append((key, list(inputs) if not isinstance(inputs, np.ndarray)
                               else inputs.copy()))
        time.sleep(0.02)
        if self.fail_on is not None and self.fail_on in inputs:
            raise InputError(f"bad input {self.fail_on}")
        return [f"{key}:{x}" for x in inputs]


def fire(batcher, jobs):
    """Await the batcher for every (key, inputs) job at once on one event loop; each job's rows,
    or its InputError."""
    async def call(job):
        try:
            return await batcher(*job)
        except InputError as exc:
            return exc

    async def every():
        return await asyncio.gather(*(call(job) for job in jobs))

    return asyncio.run(every())


def test_concurrent_calls_are_batched_and_each_gets_its_own_rows():
    run = SlowRun()
    batcher = MicroBatcher(run)
    jobs = [(5, [f"t{i}a", f"t{i}b"]) for i in range(32)]
    got = fire(batcher, jobs)
    assert got == [[f"5:t{i}a", f"5:t{i}b"] for i in range(32)]
    assert len(run.calls) < len(jobs)  # joined: fewer calls than requests
    assert max(len(inputs) for _, inputs in run.calls) > 2
    assert sorted(x for _, inputs in run.calls for x in inputs) == \
        sorted(x for _, inputs in jobs for x in inputs)  # every input tagged exactly once


def test_a_lone_call_runs_at_once_in_one_call():
    run = SlowRun()
    assert fire(MicroBatcher(run), [(3, ["x"])]) == [["3:x"]]
    assert run.calls == [(3, ["x"])]


def test_batches_run_one_at_a_time_in_the_batchers_own_thread():
    threads, running, overlaps = set(), [], []

    def run(key, inputs):
        threads.add(threading.current_thread().name)
        running.append(1)
        overlaps.append(len(running))
        time.sleep(0.01)
        running.pop()
        return list(inputs)

    batcher = MicroBatcher(run)
    jobs = [(i % 2, [f"t{i}"]) for i in range(20)]
    assert fire(batcher, jobs) == [[f"t{i}"] for i in range(20)]
    assert max(overlaps) == 1 and len(threads) == 1
    assert threads.pop().startswith("metricls-tag")  # never the event loop's thread


def test_a_request_cancelled_while_queued_leaves_the_others_answered():
    run = SlowRun()
    batcher = MicroBatcher(run)

    async def scenario():
        first = asyncio.ensure_future(batcher(1, ["a"]))  # tags at once
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(batcher(1, ["b"]))  # queued behind it
        kept = asyncio.ensure_future(batcher(1, ["c"]))
        await asyncio.sleep(0)
        gone.cancel()  # its client went away
        return await first, await kept, gone.cancelled()

    assert asyncio.run(scenario()) == (["1:a"], ["1:c"], True)


def test_calls_with_different_keys_are_never_mixed():
    run = SlowRun()
    got = fire(MicroBatcher(run), [(i % 3, [f"t{i}"]) for i in range(24)])
    assert got == [[f"{i % 3}:t{i}"] for i in range(24)]
    for key, inputs in run.calls:
        assert all(int(x[1:]) % 3 == key for x in inputs)


def test_batches_hold_at_most_max_items_but_a_bigger_call_runs_alone():
    run = SlowRun()
    batcher = MicroBatcher(run, max_items=5)
    jobs = [(1, [f"t{i}{j}" for j in range(2)]) for i in range(16)] + [(1, list("abcdefg"))]
    got = fire(batcher, jobs)
    assert got[-1] == [f"1:{c}" for c in "abcdefg"]
    assert all(len(inputs) <= 5 or inputs == list("abcdefg") for _, inputs in run.calls)


def test_a_failing_call_fails_alone():
    run = SlowRun(fail_on="bad")
    jobs = [(1, [f"t{i}"]) for i in range(15)] + [(1, ["bad"])]
    got = fire(MicroBatcher(run), jobs)
    assert isinstance(got[-1], InputError) and "bad input bad" in str(got[-1])
    assert got[:-1] == [[f"1:t{i}"] for i in range(15)]


def test_vector_inputs_are_joined_as_arrays():
    shapes = []

    def run(key, x):
        shapes.append(x.shape)
        time.sleep(0.02)
        return [float(row[0]) for row in x]

    jobs = [(1, np.full((2, 3), i, np.float32)) for i in range(12)]
    assert fire(MicroBatcher(run), jobs) == [[float(i), float(i)] for i in range(12)]
    assert max(rows for rows, _ in shapes) > 2 and all(d == 3 for _, d in shapes)


def test_max_items_must_be_positive():
    with pytest.raises(InputError, match="max_items"):
        MicroBatcher(SlowRun(), max_items=0)


def test_inputs_that_cannot_be_joined_are_tagged_alone_and_no_request_is_left_without_an_answer():
    def run(key, x):
        time.sleep(0.02)
        return [float(np.asarray(row).sum()) for row in x]

    # same key, vectors of different widths (and a text list): one batch cannot hold them
    jobs = [(1, np.ones((1, 2 + i % 3), np.float32)) for i in range(9)] + [(1, ["ab"])]
    got = fire(MicroBatcher(lambda key, x: run(key, [[len(t)] for t in x])
                            if isinstance(x, list) else run(key, x)), jobs)
    assert got[:9] == [[float(2 + i % 3)] for i in range(9)] and got[9] == [2.0]

    def broken(key, x):
        time.sleep(0.02)
        if len(x) > 1:
            return []  # a batched call that loses rows: each request is tagged alone
        return ["ok"]

    assert fire(MicroBatcher(broken), [(1, [f"t{i}"]) for i in range(8)]) == [["ok"]] * 8


def test_requests_from_several_event_loops_each_get_their_own_rows():
    """A test client may run each request on a loop of its own, in a thread of its own."""
    from concurrent.futures import ThreadPoolExecutor

    run = SlowRun()
    batcher = MicroBatcher(run)

    def one(i):
        return asyncio.run(batcher(1, [f"t{i}"]))

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(24)))
    assert got == [[f"1:t{i}"] for i in range(24)]
    assert len(run.calls) < 24  # joined across loops


def test_a_batch_that_breaks_is_answered_and_the_next_is_tagged(monkeypatch):
    run = SlowRun()
    batcher = MicroBatcher(run)
    tag = batcher._tag
    broken = [True]

    def once_broken(jobs):
        if broken.pop() if broken else False:
            raise RuntimeError("grouping failed")
        tag(jobs)

    monkeypatch.setattr(batcher, "_tag", once_broken)

    async def scenario():
        try:
            await batcher(1, ["a"])
        except RuntimeError as exc:
            first = str(exc)
        return first, await batcher(1, ["b"])

    assert asyncio.run(scenario()) == ("the batch this request was in failed", ["1:b"])


def test_a_run_that_raises_a_base_exception_fails_its_request_and_the_next_is_tagged():
    class Boom(BaseException):
        pass

    def run(key, inputs):
        if "boom" in inputs:
            raise Boom("boom")
        return list(inputs)

    batcher = MicroBatcher(run)

    async def scenario():
        with pytest.raises(Boom):
            await asyncio.wait_for(batcher(1, ["boom"]), 5)
        return await asyncio.wait_for(batcher(1, ["fine"]), 5)  # a dead drain would hang

    assert asyncio.run(scenario()) == ["fine"]
