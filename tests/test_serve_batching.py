"""MicroBatcher: concurrent calls joined into batches, each caller getting exactly its rows."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

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


def fire(batcher, jobs, threads=8):
    """Call the batcher from `threads` threads at once, one call per (key, inputs) job."""
    def call(job):
        try:
            return batcher(*job)
        except InputError as exc:
            return exc

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(call, jobs))


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
    assert MicroBatcher(run)(3, ["x"]) == ["3:x"]
    assert run.calls == [(3, ["x"])]


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
