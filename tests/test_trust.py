"""Can a user trust a tagger? Thread safety, reproducibility, crash safety of build-index,
tamper detection, fuzzed bad inputs and bad configs through the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from typer.testing import CliRunner

from metricls import Tagger, build_index, load_config, train_embedder
from metricls.cli import app
from metricls.config import Config, from_dict, to_dict
from metricls.data import SPLITS, read_items
from metricls.data.dataset import read_config_items
from metricls.errors import ConfigError, InputError, MetriclsError
from metricls.evaluation import REPORT_KEYS, evaluate
from metricls.manifest import MANIFEST, _check_entry, verify_folder
from metricls.pipeline.scoring import TAIL_FROM

# Texts whose top tag is unambiguous (each label owns the words w{label}x0..3).
CLEAR = ["w0x1 w0x2", "w5x0 w5x3", "w3x0 w3x1 noise2", "w10x3 w10x0", "w19x2 w19x3 noise4"]


def _clear_tags(tagger: Tagger) -> list[list[tuple[str, float]]]:
    return tagger.predict(CLEAR, k=3)


def _assert_same_tags(found, expected, what: str) -> None:
    """Same tag names in the same order; scores equal to 1e-4 (ANN rebuilds may reorder ties)."""
    assert [[n for n, _ in row] for row in found] == [[n for n, _ in row] for row in expected], what
    for row_f, row_e in zip(found, expected):
        for (_, sf), (_, se) in zip(row_f, row_e):
            assert abs(sf - se) <= 1e-4, (what, found, expected)


# ---- 1. concurrency ---------------------------------------------------------------------------
def _jobs() -> list[tuple[str, list[str], int, object]]:
    """25 fixed calls: varied batch sizes, texts, k, thresholds and methods."""
    rng = random.Random(7)
    words = ([f"w{label}x{j}" for label in range(20) for j in range(4)]
             + [f"noise{j}" for j in range(30)] + ["zzz", "Ünïcode ✓", "C++", "x" * 300])
    jobs = []
    for i in range(25):
        batch = [" ".join(rng.choices(words, k=rng.randint(1, 12)))
                 for _ in range(rng.randint(1, 40))]
        method = ("predict", "predict_scores", "embed")[i % 3]
        jobs.append((method, batch, rng.randint(1, 25), rng.choice([None, "tuned", 0.3])))
    return jobs


def _call(tagger: Tagger, job):
    method, batch, k, threshold = job
    if method == "predict":
        return tagger.predict(batch, k=k, threshold=threshold)
    if method == "predict_scores":
        return tagger.predict_scores(batch, k=k)
    return tagger.embed(batch)


def _identical(a, b) -> bool:
    if isinstance(a, tuple):
        return all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b) and a.dtype == b.dtype
    return a == b


@pytest.mark.parametrize("backend", ["flat", "hnsw"])
def test_predict_from_8_threads_matches_single_thread(tiny_tagger_dir, tiny_tagger_copy,
                                                        backend):
    tagger = (Tagger.load(tiny_tagger_dir) if backend == "flat"
              else build_index(tiny_tagger_copy, backend="hnsw"))
    assert tagger.state.proto_index.backend == backend
    jobs = _jobs()
    reference = [_call(tagger, job) for job in jobs]  # single thread, first
    n_threads = 8
    barrier = threading.Barrier(n_threads)

    def worker(seed: int) -> list[tuple[int, object]]:
        order = random.Random(seed).sample(range(len(jobs)), len(jobs))
        barrier.wait()  # all threads call predict at the same time
        return [(i, _call(tagger, jobs[i])) for i in order]

    with ThreadPoolExecutor(n_threads) as pool:
        results = list(pool.map(worker, range(n_threads)))
    calls = [item for per_thread in results for item in per_thread]
    assert len(calls) == n_threads * len(jobs) == 200
    bad = [(i, jobs[i][0]) for i, out in calls if not _identical(out, reference[i])]
    assert not bad, f"{len(bad)} threaded calls differ from the single-thread reference: {bad[:5]}"


# ---- 2. determinism ---------------------------------------------------------------------------
def test_same_seed_trains_the_same_tagger(tmp_path, synthetic_path):
    texts = [*CLEAR, "noise1 noise2 w7x1", "w12x0 w2x3 w15x1", "unknown words only"]
    runs = []
    for name in ("a", "b"):
        # disturb every global RNG between the runs: training must seed what it uses
        random.random(), np.random.rand(3), torch.rand(3)
        cfg = load_config(TINY, [f"data.path={synthetic_path}"])
        train_embedder(cfg, out=tmp_path / name)
        tagger = build_index(tmp_path / name)
        test_items = read_config_items(cfg.data).subset("test")
        runs.append((tagger.predict(texts, k=5), evaluate(tagger, test_items)))
    (tags_a, report_a), (tags_b, report_b) = runs
    assert [[n for n, _ in row] for row in tags_a] == [[n for n, _ in row] for row in tags_b]
    # Tolerance: 1e-6 absolute on every score and metric. Same seed, data and CPU make training
    # bit-for-bit repeatable here; 1e-6 only leaves room for float32 summation-order noise
    # (e.g. another BLAS thread split), far below any real difference between two trainings.
    for row_a, row_b in zip(tags_a, tags_b):
        for (_, score_a), (_, score_b) in zip(row_a, row_b):
            assert abs(score_a - score_b) <= 1e-6
    assert report_a["n_items"] == report_b["n_items"] > 0
    for key in REPORT_KEYS:
        assert abs(report_a[key] - report_b[key]) <= 1e-6, (key, report_a[key], report_b[key])


# ---- 3. SIGKILL during build-index --------------------------------------------------------------
# A pre-imported "zygote" process (started with sys.executable) forks one child per trial; the
# child runs build_index and is SIGKILLed by the zygote, its parent, which reaps it at once (no
# zombie that recovery would take for a live writer, no pid reuse race). Forking skips the ~2 s
# import of torch per trial, so 20+ trials fit in the time budget; the real command line is
# killed too, in test_cli_build_index_killed_in_its_write_phase.
ZYGOTE = r'''
import json, os, signal, sys, time
import metricls.build  # the slow imports (torch, faiss), once
from metricls import build_index


def arm_crash(folder, after):
    """SIGKILL this process after its `after`-th rename of a folder beside `folder` (0: before
    the first one)."""
    parent = os.path.dirname(os.path.abspath(folder))
    done = [0]

    def wrap(real):
        def rename(src, dst, *args, **kwargs):
            top = os.path.dirname(os.path.abspath(dst)) == parent
            if top and after == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst, *args, **kwargs)
            if top:
                done[0] += 1
                if done[0] == after:
                    os.kill(os.getpid(), signal.SIGKILL)
        return rename
    os.rename, os.replace = wrap(os.rename), wrap(os.replace)


print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    folder = job["folder"]
    parent, stage = os.path.dirname(folder), "." + os.path.basename(folder) + ".tmp-"
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: one build-index run
        os.dup2(2, 1)
        code = 0
        try:
            if job["crash_after"] is not None:
                arm_crash(folder, job["crash_after"])
            build_index(folder, backend=job["backend"])
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        os._exit(code)
    t_stage = kill_at = None
    if job["delay"] is not None:
        kill_at = job["delay"]
    while True:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        now = time.perf_counter() - start
        if reaped:
            break
        if t_stage is None and any(e.name.startswith(stage) for e in os.scandir(parent)):
            t_stage = now
            if job["after_stage"] is not None:
                kill_at = now + job["after_stage"]
        if (kill_at is not None and now >= kill_at) or now > 120:
            os.kill(pid, signal.SIGKILL)
            kill_at = float("inf")
        time.sleep(0.0005)
    print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                      "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                      "t_stage": t_stage, "t_end": now}), flush=True)
'''


needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(signal, "SIGKILL"),
                                reason="needs os.fork and SIGKILL (POSIX)")


class _Zygote:
    def __init__(self, cwd: Path) -> None:
        self.log = cwd / "zygote.log"
        self._log_fh = open(self.log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log_fh, text=True,
                                     cwd=cwd)
        assert self.proc.stdout.readline().strip() == "ready", self.log.read_text()

    def run(self, folder: Path, backend: str, *, delay: float | None = None,
            after_stage: float | None = None, crash_after: int | None = None) -> dict:
        job = {"folder": str(folder), "backend": backend, "delay": delay,
               "after_stage": after_stage, "crash_after": crash_after}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the zygote died: {self.log.read_text()[-3000:]}"
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_fh.close()


def _siblings(folder: Path) -> dict[str, list[str]]:
    names = [p.name for p in folder.parent.iterdir()]
    return {kind: [n for n in names if n.startswith(f".{folder.name}.{kind}-")]
            for kind in ("tmp", "old")}


def _check_after_crash(folder: Path, ref: dict, allowed: tuple[str, ...], what: str) -> str:
    """Load (which recovers), check nothing is left over and the tags; return the backend."""
    tagger = Tagger.load(folder)
    assert _siblings(folder) == {"tmp": [], "old": []}, (what, _siblings(folder))
    assert verify_folder(folder) == [], what
    backend = tagger.state.proto_index.backend
    assert backend in allowed, (what, backend)
    _assert_same_tags(_clear_tags(tagger), ref[backend], f"{what}: {backend}")
    return backend


@needs_fork
def test_build_index_killed_anywhere_leaves_old_or_new_tagger(tiny_tagger_copy, tmp_path):
    folder = tiny_tagger_copy
    ref = {"flat": _clear_tags(Tagger.load(folder))}
    zygote = _Zygote(tmp_path)
    try:
        # one full run each way: their timings pick the kill delays; they give the references
        to_hnsw = zygote.run(folder, "hnsw")
        assert to_hnsw["exit"] == 0, zygote.log.read_text()[-3000:]
        ref["hnsw"] = _clear_tags(Tagger.load(folder))
        to_flat = zygote.run(folder, "flat")
        assert to_flat["exit"] == 0, zygote.log.read_text()[-3000:]
        _assert_same_tags(_clear_tags(Tagger.load(folder)), ref["flat"], "flat rebuilt")
        assert to_hnsw["t_stage"] is not None and to_flat["t_stage"] is not None
        t_end = max(to_hnsw["t_end"], to_flat["t_end"])
        write_phase = t_end - min(to_hnsw["t_stage"], to_flat["t_stage"])

        rng = random.Random(20240501)
        plan = ([{"delay": rng.uniform(0, t_end)} for _ in range(12)]  # anywhere in the run
                # in the staged write, fsyncs and swap: timed from when the staging folder shows
                + [{"after_stage": rng.uniform(0, write_phase)} for _ in range(12)])
        rng.shuffle(plan)
        # and SIGKILL at each step of the folder swap: before it, between the renames, after
        plan += [{"crash_after": n} for n in (0, 1, 2)]
        current, seen = "flat", []
        for i, trial in enumerate(plan):
            want = "hnsw" if current == "flat" else "flat"
            result = zygote.run(folder, want, **trial)
            left = _siblings(folder)
            state = ("missing" if not folder.exists() else "staged" if left["tmp"] or left["old"]
                     else "clean")
            what = f"trial {i} {trial} -> {want}: {result}, state {state}"
            if "crash_after" in trial:
                assert result["signal"] == signal.SIGKILL, what  # the swap did rename folders
            if result["signal"] is None:
                assert result["exit"] == 0, (what, zygote.log.read_text()[-3000:])
            backend = _check_after_crash(folder, ref, (current, want), what)
            if result["signal"] is None:
                assert backend == want, what  # a finished run installed the new tagger
            seen.append((result["signal"] is not None, state, backend))
            current = backend
    finally:
        zygote.close()
    killed = [s for s in seen if s[0]]
    mid_write = [s for s in killed if s[1] != "clean"]
    assert len(plan) >= 20 + 3
    assert len(killed) >= 12, seen  # most runs were really killed ...
    assert len(mid_write) >= 4, seen  # ... several of them inside the staged write / swap
    assert {s[2] for s in seen} == {"flat", "hnsw"}, seen  # and both outcomes happened


CLI = "from metricls.cli import entrypoint; entrypoint()"


def _run_cli_build(folder: Path, backend: str, cwd: Path,
                   kill_after_stage: float | None = None) -> dict:
    """Run `metricls build-index` as a subprocess; optionally SIGKILL it `kill_after_stage`
    seconds after its staging folder appears."""
    proc = subprocess.Popen([sys.executable, "-c", CLI, "build-index", str(folder),
                             "--backend", backend], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    start, t_stage, kill_at = time.perf_counter(), None, None
    try:
        while proc.poll() is None:
            now = time.perf_counter() - start
            if t_stage is None and _siblings(folder)["tmp"]:
                t_stage = now
                if kill_after_stage is not None:
                    kill_at = now + kill_after_stage
            if kill_at is not None and now >= kill_at:
                proc.send_signal(signal.SIGKILL)
                kill_at = None
            assert now < 300, "build-index hangs"
            time.sleep(0.0005)
        output = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    return {"code": proc.returncode, "t_stage": t_stage, "t_end": time.perf_counter() - start,
            "output": output}


@needs_fork
def test_cli_build_index_killed_in_its_write_phase(tiny_tagger_copy, tmp_path):
    folder = tiny_tagger_copy
    ref = {"flat": _clear_tags(Tagger.load(folder))}
    full = _run_cli_build(folder, "hnsw", tmp_path)  # the measured full run
    assert full["code"] == 0 and "built:" in full["output"], full["output"][-3000:]
    assert full["t_stage"] is not None
    ref["hnsw"] = _clear_tags(Tagger.load(folder))
    delay = random.Random(5).uniform(0, full["t_end"] - full["t_stage"])
    killed = _run_cli_build(folder, "flat", tmp_path, kill_after_stage=delay)
    what = f"CLI killed {delay:.3f}s into its write phase: {killed}"
    assert killed["code"] in (0, -signal.SIGKILL), what
    backend = _check_after_crash(folder, ref, ("hnsw", "flat"), what)
    assert killed["code"] == -signal.SIGKILL or backend == "flat", what


def test_python_m_metricls_cli_runs_the_cli(tmp_path):
    res = subprocess.run([sys.executable, "-m", "metricls.cli", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "build-index" in res.stdout, (
        f"`python -m metricls.cli --help` printed {res.stdout!r} {res.stderr[-500:]!r}")


# ---- 4. verify detects every single-byte change -----------------------------------------------
SMALL = ["encoder.lexical.buckets=64", "encoder.lexical.dim=8", "encoder.head.hidden_dim=8",
         "encoder.head.out_dim=8", "train.epochs=1"]


@pytest.fixture(scope="module")
def small_tagger_dir(tmp_path_factory, synthetic_path) -> Path:
    folder = tmp_path_factory.mktemp("small") / "tagger"
    train_embedder(load_config(TINY, [f"data.path={synthetic_path}", *SMALL]), out=folder)
    build_index(folder)
    return folder


def test_verify_detects_every_single_byte_change(small_tagger_dir):
    folder = small_tagger_dir
    assert verify_folder(folder) == []
    files = json.loads((folder / MANIFEST).read_text())["files"]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk == {*files, MANIFEST}  # the manifest lists every other file
    checked = 0
    for rel in [*files, MANIFEST]:
        path = folder / rel
        data = path.read_bytes()
        # Every position: the manifest through the whole-folder verify_folder; the other files
        # through _check_entry, the per-file check verify_folder runs for each manifest entry
        # (the whole-folder check costs ~0.5 ms, too slow for all ~35k positions), plus 16
        # spread positions of each file through verify_folder itself.
        whole = (set(range(len(data))) if rel == MANIFEST
                 else {int(p) for p in np.linspace(0, len(data) - 1, 16)})
        fd = os.open(path, os.O_RDWR)
        try:
            for pos in range(len(data)):
                os.pwrite(fd, bytes([data[pos] ^ 0x01]), pos)
                if pos in whole:
                    problems = verify_folder(folder)
                    assert any(str(path) in p for p in problems), (rel, pos, problems)
                else:
                    problem = _check_entry(folder, rel, files[rel])
                    assert problem is not None and str(path) in problem, (rel, pos, problem)
                os.pwrite(fd, data[pos:pos + 1], pos)
                checked += 1
        finally:
            os.close(fd)
        assert path.read_bytes() == data
    assert checked == sum(e["bytes"] for e in files.values()) + (folder / MANIFEST).stat().st_size
    assert verify_folder(folder) == []


def test_verify_cli_exit_codes(small_tagger_dir, tmp_path):
    folder = tmp_path / "tagger"
    shutil.copytree(small_tagger_dir, folder)
    res = CliRunner().invoke(app, ["verify", str(folder)])
    assert res.exit_code == 0 and f"ok: {folder}" in res.output, res.output
    path = folder / "ann" / "items" / "faiss.index"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    res = CliRunner().invoke(app, ["verify", str(folder)])
    assert res.exit_code == 1, res.output
    assert "problem:" in res.output and str(path) in res.output, res.output


# ---- 5. fuzzing ---------------------------------------------------------------------------------
FUZZ = {"deadline": None, "derandomize": True, "database": None,
        "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}

_CHARS = st.one_of(st.characters(), st.characters(categories=["Cs"]),
                   st.sampled_from(list("w0x1 \t\n\x00é✓")))
_TEXT = st.text(_CHARS, max_size=24)
_WORDS = st.lists(st.sampled_from(["w0x1", "w3x2", "noise4", "Ünï", "C++", " ", "ok!"]),
                  min_size=1, max_size=5).map(" ".join)
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _TEXT, _WORDS,
                    st.binary(max_size=6), st.complex_numbers(), st.integers(-5, 5).map(np.int64),
                    st.floats(width=32).map(np.float32))
_NESTED = st.recursive(_SCALAR, lambda c: st.lists(c, max_size=3) | st.tuples(c, c)
                       | st.dictionaries(_TEXT, c, max_size=2), max_leaves=8)
_DTYPES = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                    hnp.boolean_dtypes(), hnp.complex_number_dtypes(),
                    hnp.unicode_string_dtypes(max_len=6), hnp.byte_string_dtypes(max_len=4),
                    hnp.datetime64_dtypes())
_ARRAYS = hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


def _object_array(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


INPUTS = st.one_of(st.lists(_WORDS, max_size=6), st.lists(_TEXT, max_size=4),
                   st.lists(_SCALAR, max_size=4), _NESTED, _ARRAYS,
                   st.lists(_SCALAR, max_size=4).map(_object_array),
                   st.lists(_WORDS, max_size=4).map(tuple),
                   st.lists(_WORDS, max_size=4).map(lambda xs: pd.Series(xs, dtype=object)),
                   st.sets(_WORDS, max_size=3), st.dictionaries(_WORDS, _WORDS, max_size=2))
# k: small, or so large that numpy refuses the (n, k) result at once. k in between (1e5..1e18)
# would really allocate n*k*12 bytes before failing, and could exhaust the host's memory.
K = st.one_of(st.integers(-2, 30), st.integers(max_value=10_000), st.integers(min_value=2**61),
              st.floats(), st.booleans(), st.none(), _TEXT, st.integers(-2, 30).map(np.int64),
              st.sampled_from([np.uint64(2**63), np.int64(2**62), np.int8(3)]),
              hnp.arrays(np.int64, st.integers(0, 3)))
THRESHOLD = st.one_of(st.none(), st.just("tuned"), st.floats(), st.integers(),
                      st.integers(min_value=2**1024), _TEXT, st.booleans(),
                      st.floats(width=32).map(np.float32),
                      hnp.arrays(np.float64, st.integers(0, 3)),
                      st.sampled_from([float("-inf"), float("nan"), "TUNED", np.float64(0.4)]))


@pytest.fixture(scope="module")
def fuzz_tagger(tiny_tagger_dir) -> Tagger:
    return Tagger.load(tiny_tagger_dir)


def _by_score(tagger: Tagger, k) -> int:
    """How many first places are ordered by score: past `TAIL_FROM`, a reranker tagger with
    the tail ordering ranks by score / propensity^`Scoring.tail_weight`."""
    state = tagger.state
    tailed = state.reranker is not None and state.scoring.tail_weight > 0 and int(k) > TAIL_FROM
    return TAIL_FROM if tailed else int(k)


def _check_well_formed(tagger: Tagger, method: str, inputs, k, threshold, out) -> None:
    n, n_labels, names = len(inputs), len(tagger.labels), set(tagger.labels)
    if method == "embed":
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        assert out.shape == (n, tagger.model.out_dim) and np.isfinite(out).all()
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
        return
    if method == "predict_scores":
        scores, ids = out
        assert scores.shape == ids.shape == (n, int(k))
        assert scores.dtype == np.float32 and ids.dtype == np.int64
        assert ((ids >= -1) & (ids < n_labels)).all()
        assert (np.isneginf(scores) == (ids < 0)).all() and not np.isnan(scores).any()
        ranked = scores[:, :_by_score(tagger, k)]
        assert (ranked[:, :-1] >= ranked[:, 1:]).all()  # best first (-inf padding last)
        return
    assert isinstance(out, list) and len(out) == n
    for row in out:
        assert isinstance(row, list) and len(row) <= int(k)
        tags = [name for name, _ in row]
        scores = [score for _, score in row]
        assert set(tags) <= names and len(set(tags)) == len(tags), row  # real, distinct labels
        assert all(isinstance(s, float) and np.isfinite(s) for s in scores), row
        ranked = scores[:_by_score(tagger, k)]
        assert ranked == sorted(ranked, reverse=True), row
        if isinstance(threshold, float) and not np.isnan(threshold):
            assert all(s >= threshold for s in scores), row


@settings(max_examples=300, **FUZZ)
@given(method=st.sampled_from(["predict", "predict_scores", "embed"]), inputs=INPUTS, k=K,
       threshold=THRESHOLD)
@example(method="predict", inputs=["w0x1"], k=2**70, threshold=None)
@example(method="predict_scores", inputs=[], k=np.int64(2**62), threshold=None)
@example(method="predict", inputs=["w0x1"], k=3, threshold=10**400)
@example(method="predict", inputs=["w0x1"], k=3, threshold=np.array([0.5, 0.5]))
@example(method="predict", inputs=["w0x1"], k=25, threshold=float("-inf"))
def test_fuzz_tagger_calls(fuzz_tagger, method, inputs, k, threshold):
    tagger = fuzz_tagger
    try:
        if method == "predict":
            out = tagger.predict(inputs, k=k, threshold=threshold)
        elif method == "predict_scores":
            out = tagger.predict_scores(inputs, k=k)
        else:
            out = tagger.embed(inputs)
    except MetriclsError:
        return  # a clean refusal; any other exception fails the test
    _check_well_formed(tagger, method, inputs, k, threshold, out)


def _dotted_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hint):
            keys += _dotted_keys(hint, prefix + f.name + ".")
    return keys


KEYS = _dotted_keys()
_PARTS = sorted({part for key in KEYS for part in key.split(".")})
_SHORT = st.text(_CHARS, max_size=8)
_KEY = st.one_of(st.sampled_from(KEYS),
                 st.tuples(st.sampled_from(KEYS), st.sampled_from([".", "..", " ", ".x", "X"]))
                 .map("".join),
                 st.lists(st.sampled_from(_PARTS) | _SHORT, min_size=1, max_size=4).map(".".join),
                 _SHORT)
_YAML = ["[", "]", "{", "}", "{a: 1", "[1, [2]", "*x", "&a x", "!!timestamp x", "!!binary x",
         "!!python/object:os.system x", "!!set {a}", "!!float abc", "!!int x", "a: b: c",
         "- - x", "%YAML 1.1", "@x", "`x", "'x", '"x', "|", ">", "? x", "---", "...", "~",
         "null", "yes", "off", ".nan", "-.inf", "0x1F", "0o17", "1_000", "1e400", "9" * 5000,
         "-" + "9" * 5000, "[lexical, minilm]", "[[lexical]]", "{epochs: 2}", "{[1]: 2}",
         "2020-01-01", "2020-01-01 10:00:00", "\t", "", " ", "3e-4", "[" * 2000]
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _SHORT,
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(_SHORT, c, max_size=3),
                     max_leaves=6)
_VALUE = st.one_of(st.sampled_from(_YAML), _SHORT, st.integers().map(str), st.floats().map(repr),
                   _JSON.map(json.dumps))
_OVERRIDE = st.one_of(st.tuples(_KEY, _VALUE).map("=".join), _SHORT)


@settings(max_examples=150, **FUZZ)
@given(overrides=st.lists(_OVERRIDE, min_size=1, max_size=4))
@example(overrides=["train.lr=["])
@example(overrides=["train.epochs=" + "9" * 5000])
@example(overrides=["train.lr=!!timestamp x"])
def test_fuzz_config_overrides(overrides):
    try:
        cfg = load_config(None, overrides)
    except ConfigError:
        return
    assert isinstance(cfg, Config)
    # what was accepted can be saved and read back (build-index re-reads config.json this way)
    assert isinstance(from_dict(json.loads(json.dumps(to_dict(cfg)))), Config)


_GOOD_ROW = b'{"id": "a", "text": "w1 w2", "labels": ["x::y"]}'
_HUGE_INT_ROW = b'{"id": ' + b"9" * 5000 + b', "text": "w", "labels": []}'  # > 4300 digits
_BAD_LINES = [b"{", b"[1, 2]", b'"text"', b"NaN", b"\xff\xfe\xfd", b"{}", b"   ", b"\r",
              b'{"id": "a", "text": "\xc3\x28", "labels": []}', b"\xef\xbb\xbf" + _GOOD_ROW,
              _HUGE_INT_ROW, b"[" * 100_000,
              b'{"id": "a"}', _GOOD_ROW, b'{"id": 7, "text": "w3", "labels": []}']
_ROW = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.sampled_from(["a", "b", "1", "", " "]), st.integers(-2, 3), _JSON),
    "text": st.one_of(st.sampled_from(["w1 w2", "", "  ", "x"]), _SHORT, _JSON),
    "labels": st.one_of(st.lists(st.sampled_from(["x::y", "a", "", " "]), max_size=3),
                        st.lists(_JSON, max_size=3), _JSON),
    "split": st.one_of(st.sampled_from([*SPLITS, "x"]), _JSON),
    "extra": _JSON,
}).map(lambda row: json.dumps(row).encode())
_LINE = st.one_of(_ROW, _ROW, st.sampled_from(_BAD_LINES), st.binary(max_size=24))


@st.composite
def _table(draw) -> tuple[str, bytes]:
    body = b"\n".join(draw(st.lists(_LINE, max_size=6))) + draw(st.sampled_from([b"", b"\n"]))
    suffix = draw(st.sampled_from([".jsonl", ".json", ".ndjson", ".jsonl.gz"]))
    if suffix.endswith(".gz"):
        body = gzip.compress(body)
        body = body[: draw(st.integers(1, len(body)))] if draw(st.booleans()) else body
    return suffix, body


_COLUMN = st.one_of(st.sampled_from(["id", "text", "labels", "split", "extra", "", "nope"]),
                    _SHORT, st.sampled_from([None, 5, b"id", ["id"]]))
_TEXT_COLUMNS = st.one_of(st.sampled_from([["text"], "text", ("text", "extra"), [], ["nope"],
                                           [""], None, 5, [1], ["text", "text"]]),
                          st.lists(_COLUMN, max_size=2))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_items")


@settings(max_examples=150, **FUZZ)
@given(table=_table(), id_column=_COLUMN, text_columns=_TEXT_COLUMNS, label_column=_COLUMN,
       split_column=st.sampled_from([None, "split", "nope", "text"]),
       require_labels=st.booleans())
@example(table=(".jsonl", _HUGE_INT_ROW), id_column="id", text_columns=["text"],
         label_column="labels", split_column=None, require_labels=True)
def test_fuzz_read_items(fuzz_dir, table, id_column, text_columns, label_column, split_column,
                         require_labels):
    suffix, body = table
    path = fuzz_dir / f"items{suffix}"
    path.write_bytes(body)
    try:
        items = read_items(path, id_column=id_column, text_columns=text_columns,
                           label_column=label_column, split_column=split_column,
                           require_labels=require_labels)
    except InputError:
        return
    n = len(items)
    assert n > 0 and len(set(items.ids)) == n
    assert all(isinstance(i, str) and i.strip() for i in items.ids)
    assert items.texts is not None and len(items.texts) == n
    assert all(isinstance(t, str) and t.strip() for t in items.texts)
    if items.labels is not None:
        assert len(items.labels) == n
        for row in items.labels:
            assert isinstance(row, list) and len(set(row)) == len(row)
            assert all(isinstance(label, str) and label.strip() for label in row)
    assert items.split.shape == (n,) and set(items.split.tolist()) <= set(SPLITS)
    assert items.features is None


# ---- 6. bad configs through the CLI -------------------------------------------------------------
@contextlib.contextmanager
def _fresh_logging():
    """Each CliRunner run gets its own stderr; the CLI's logging.basicConfig would otherwise
    keep writing to the stream of an earlier (closed) run and print "--- Logging error ---"."""
    root, ours = logging.getLogger(), logging.getLogger("metricls")
    handlers, level = root.handlers[:], ours.level
    root.handlers[:] = []
    try:
        yield
    finally:
        root.handlers[:] = handlers
        ours.setLevel(level)


BAD_SETTINGS = [
    ("train.lr=abc", "train.lr"),
    ("train.epochs=1.5", "train.epochs"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=-1", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.lr=-1", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.lr=.inf", "train.lr"),
    ("train.seed=-1", "train.seed"),
    ("encoder.lexical.buckets=0", "encoder.lexical.buckets"),
    ("encoder.head.out_dim=0", "encoder.head.out_dim"),
    ("encoder.head.dropout=1.5", "encoder.head.dropout"),
    ("data.min_count=0", "data.min_count"),
    ("encoder.backbones=[]", "encoder.backbones"),
    ("index.backend=annoy", "index.backend"),
    ("train.lrr=1", "train.lrr"),
    ("train.lr=[", "train.lr"),
    ("train.epochs=" + "9" * 5000, "train.epochs"),
]


@pytest.mark.parametrize("setting, key", BAD_SETTINGS, ids=[s[:30] for s, _ in BAD_SETTINGS])
def test_cli_train_bad_setting_is_one_error_line(tmp_path, synthetic_path, setting, key):
    out = tmp_path / "tagger"
    # a fast, valid run but for the bad setting, which comes last and so wins
    args = ["train", str(TINY), "--set", f"data.path={synthetic_path}", "--set",
            "train.epochs=1", "--set", setting, "--out", str(out)]
    with _fresh_logging():
        res = CliRunner().invoke(app, args)
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2, (res.exit_code, res.output[-2000:], res.exception)
    assert len(errors) == 1 and key in errors[0], res.output[-2000:]
    assert "Traceback" not in res.output
    assert not out.exists() and not list(tmp_path.glob(".tagger*"))  # nothing written


def test_cli_train_bad_value_in_config_file(tmp_path, synthetic_path):
    config = tmp_path / "bad.yaml"
    text = TINY.read_text()
    assert "out_dim: 32" in text
    config.write_text(text.replace("out_dim: 32", "out_dim: -4"))
    with _fresh_logging():
        res = CliRunner().invoke(app, ["train", str(config), "--set",
                                       f"data.path={synthetic_path}", "--out",
                                       str(tmp_path / "t")])
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1, (res.output[-2000:], res.exception)
    assert "encoder.head.out_dim" in errors[0] and "Traceback" not in res.output
