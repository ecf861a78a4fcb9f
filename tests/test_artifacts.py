"""Tests of metricls.artifacts, staging and manifest: atomic writes, swaps, manifests, recovery."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metricls import artifacts as art
from metricls import manifest as mf
from metricls import staging
from metricls.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[1]
WHITESPACE = b" \t\n\r"


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def siblings(target: Path) -> list[str]:
    """Temp and old folders beside `target` (its writers' lock file is meant to stay)."""
    return sorted(p.name for p in target.parent.iterdir()
                  if p.name.startswith(f".{target.name}.") and p.name != f".{target.name}.lock")


def make_folder(folder: Path, version: int = 0) -> dict:
    """A small tagger-like folder: JSON files, a safetensors file, a binary file, a manifest."""
    art.write_json(folder / "config.json", {"version": version, "name": "tiny", "k": [1, 2]})
    art.write_json(folder / "labels.json", {"labels": ["a", "b", "c"], "version": version})
    art.save_tensors(folder / "prototypes.safetensors",
                   {"prototypes": np.full((2, 3), version, np.float32)}, {"version": str(version)})
    (folder / "ann").mkdir(exist_ok=True)
    (folder / "ann" / "index.bin").write_bytes(bytes([version % 256]) * 24 + bytes(range(8)))
    return mf.write_manifest(folder, data={"version": version}, metrics={"p@1": 0.5})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    with staging.staged_dir(tmp_path / "tagger") as tmp:
        make_folder(tmp)
    return tmp_path / "tagger"


# ---- JSON and tensors ---------------------------------------------------------------------------
def test_json_round_trip(tmp_path: Path) -> None:
    obj = {"z": 1, "a": [1.5, None, "é"], "n": {"x": np.float32(0.25), "y": np.arange(2)}}
    art.write_json(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.startswith('{\n  "z": 1,')
    assert art.read_json(tmp_path / "x.json") == {"z": 1, "a": [1.5, None, "é"],
                                                "n": {"x": 0.25, "y": [0, 1]}}
    assert os.listdir(tmp_path) == ["x.json"]


def test_read_json_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"missing\.json: missing"):
        art.read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{\n  "a": 1,\n}\n')
    with pytest.raises(ArtifactError, match=r"bad\.json: invalid JSON at line 3"):
        art.read_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1]\n")
    with pytest.raises(ArtifactError, match=r"list\.json: expected a JSON object"):
        art.read_json(tmp_path / "list.json")


def test_tensors_round_trip_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    tensors = {"f": np.arange(6, dtype=np.float32).reshape(2, 3).T, "i": np.arange(3)}
    art.save_tensors(path, tensors, {"format": "x/1"})
    loaded, meta = art.load_tensors(path)
    assert meta == {"format": "x/1"} and set(loaded) == {"f", "i"}
    for key, value in tensors.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype
    assert hashlib.sha256(path.read_bytes()).hexdigest() == art.sha256_file(path)
    data = path.read_bytes()
    for broken in (data[:20], data[:8] + b"\xff" + data[9:], b""):
        path.write_bytes(broken)
        with pytest.raises(ArtifactError, match=r"t\.safetensors: not a readable safetensors"):
            art.load_tensors(path)
    with pytest.raises(ArtifactError, match=r"nope\.safetensors: missing"):
        art.load_tensors(tmp_path / "nope.safetensors")


def test_versions_never_import_torch() -> None:
    code = ("import sys, json; import metricls.manifest as a; "
            "print(json.dumps([a.versions(), 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    found, torch_imported = json.loads(out)
    assert not torch_imported
    assert {"metricls", "python", "numpy", "torch", "faiss", "scann", "pytorch_metric_learning",
            "safetensors"} <= set(found)
    assert all(isinstance(v, str) and v for v in found.values())


# ---- staged folders -----------------------------------------------------------------------------
def test_staged_dir_swaps_in_new_content(folder: Path) -> None:
    (folder / "only_in_old.txt").write_text("old")
    with staging.staged_dir(folder) as tmp:
        assert tmp.parent == folder.parent and tmp.name.startswith(".tagger.tmp-")
        assert (folder / "only_in_old.txt").exists()  # the old folder stays readable meanwhile
        make_folder(tmp, version=1)
    assert art.read_json(folder / "config.json")["version"] == 1
    assert not (folder / "only_in_old.txt").exists()
    assert mf.verify_folder(folder) == [] and siblings(folder) == []


def test_staged_dir_leaves_target_untouched_when_body_raises(folder: Path) -> None:
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="boom"), staging.staged_dir(folder) as tmp:
        make_folder(tmp, version=7)
        raise RuntimeError("boom")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert siblings(folder) == []
    with pytest.raises(KeyboardInterrupt), staging.staged_dir(folder.parent / "fresh"):
        raise KeyboardInterrupt
    assert not (folder.parent / "fresh").exists() and siblings(folder.parent / "fresh") == []


def test_staged_dir_refuses_a_file_target(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="not a folder"), staging.staged_dir(tmp_path / "file"):
        pass


def test_recover_dir_after_crash_between_renames(folder: Path) -> None:
    pid = dead_pid()
    tmp = folder.parent / f".tagger.tmp-{pid}-abcd1234"
    tmp.mkdir()
    make_folder(tmp, version=2)  # complete new version, never swapped in
    os.rename(folder, folder.parent / f".tagger.old-{pid}")  # the crash: first rename only
    assert mf.verify_folder(folder)[0].endswith("restores it")
    staging.recover_dir(folder)
    assert mf.verify_folder(folder) == []
    assert art.read_json(folder / "config.json")["version"] == 0
    assert siblings(folder) == []


HOLD = ("import sys\nfrom metricls.staging import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n")


def test_recover_dir_leaves_a_live_writer_alone_whatever_its_pid(folder: Path) -> None:
    # A writer in another container: its pid names no process here (or another one); the
    # lock it holds on the folder is what says it is alive.
    pid = dead_pid()
    tmp = folder.parent / f".tagger.tmp-{pid}-abcd1234"
    tmp.mkdir()
    make_folder(tmp, version=2)
    os.rename(folder, folder.parent / f".tagger.old-{pid}")  # between its two renames
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        staging.recover_dir(folder)
        assert "a running writer is replacing it" in mf.verify_folder(folder)[0]
        assert not folder.exists()
        assert siblings(folder) == sorted([tmp.name, f".tagger.old-{pid}"])  # untouched
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    staging.recover_dir(folder)  # the writer is gone: its old folder comes back, its temp goes
    assert art.read_json(folder / "config.json")["version"] == 0 and siblings(folder) == []


def test_recover_dir_drops_stale_old_when_target_exists(folder: Path) -> None:
    stale = folder.parent / f".tagger.old-{dead_pid()}"
    stale.mkdir()
    (stale / "half-deleted").write_text("x")
    staging.recover_dir(folder)
    assert siblings(folder) == [] and mf.verify_folder(folder) == []


def test_staged_dir_recovers_first(folder: Path) -> None:
    os.rename(folder, folder.parent / f".tagger.old-{dead_pid()}")
    with staging.staged_dir(folder) as tmp:
        assert art.read_json(folder / "config.json")["version"] == 0  # old one readable again
        make_folder(tmp, version=3)
    assert art.read_json(folder / "config.json")["version"] == 3 and siblings(folder) == []
    os.rename(folder, folder.parent / f".tagger.old-{dead_pid()}")
    assert mf.check_folder(folder)["data"] == {"version": 3}  # loading recovers too


# ---- manifests ----------------------------------------------------------------------------------
def test_manifest_contents(folder: Path) -> None:
    manifest = mf.check_folder(folder)
    assert manifest["format"] == mf.FORMAT and manifest["data"] == {"version": 0}
    assert list(manifest["files"]) == ["ann/index.bin", "config.json", "labels.json",
                                       "prototypes.safetensors"]
    entry = manifest["files"]["ann/index.bin"]
    assert entry == {"sha256": art.sha256_file(folder / "ann" / "index.bin"), "bytes": 32}
    assert manifest["created"].endswith("+00:00") and "manifest_sha256" in manifest
    assert list(manifest)[-1] == "manifest_sha256"
    with pytest.raises(ValueError, match="reserved"):
        mf.write_manifest(folder, data={}, metrics={}, extra={"files": {}})


def test_every_bit_flip_of_every_file_is_detected(folder: Path) -> None:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    assert len(files) == 5
    for path in files:
        original = path.read_bytes()
        for pos in range(len(original)):
            for bit in range(8):
                changed = bytearray(original)
                changed[pos] ^= 1 << bit
                path.write_bytes(changed)
                problems = mf.verify_folder(folder)
                assert problems, f"{path.name}: byte {pos} bit {bit} undetected"
                assert all(str(folder) in p for p in problems)
        path.write_bytes(original)
    assert mf.verify_folder(folder) == []


def test_whitespace_swaps_in_manifest_are_detected(folder: Path) -> None:
    path = folder / "manifest.json"
    original = path.read_bytes()
    for pos, byte in enumerate(original):
        for other in WHITESPACE if byte in WHITESPACE else ():
            if other != byte:
                path.write_bytes(original[:pos] + bytes([other]) + original[pos + 1:])
                assert mf.verify_folder(folder), \
                    f"byte {pos}: {byte!r} -> {other!r} undetected"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_byte_change_in_manifest_is_detected(folder: Path, data: st.DataObject) -> None:
    path = folder / "manifest.json"
    original = path.read_bytes()
    pos = data.draw(st.integers(0, len(original) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]))
    path.write_bytes(original[:pos] + bytes([new]) + original[pos + 1:])
    try:
        assert mf.verify_folder(folder)
    finally:
        path.write_bytes(original)


def test_truncation_deletion_and_extra_files(folder: Path) -> None:
    proto = folder / "prototypes.safetensors"
    proto.write_bytes(proto.read_bytes()[:-1])
    (folder / "labels.json").unlink()
    (folder / "ann" / "stray.txt").write_text("x")
    problems = mf.verify_folder(folder)
    assert len(problems) == 3
    assert "prototypes.safetensors: " in problems[1] and "truncated" in problems[1]
    assert "build-index" in problems[1]
    assert "labels.json: missing" in problems[0] and "metricls train" in problems[0]
    assert problems[2].startswith("unexpected file") and "stray.txt" in problems[2]
    with (pytest.warns(UserWarning, match="unexpected file"),
          pytest.raises(ArtifactError, match=r"labels\.json: missing.*and 1 more: run `metricls")):
        mf.check_folder(folder)


def test_extra_file_only_warns_in_check_folder(folder: Path) -> None:
    (folder / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(UserWarning, match="unexpected file"):
        assert mf.check_folder(folder)["format"] == mf.FORMAT


def test_manifest_missing_or_not_json(folder: Path) -> None:
    path = folder / "manifest.json"
    path.write_text("{\n  oops\n")
    assert "line 2" in mf.verify_folder(folder)[0]
    path.unlink()
    assert mf.verify_folder(folder)[0].startswith(f"{path}: missing")
    assert mf.verify_folder(folder / "nowhere")[0].endswith("no such folder")


def resign(folder: Path, **changes: object) -> None:
    """Rewrite the manifest with `changes`, re-signed so that only the changes matter."""
    manifest = art.read_json(folder / "manifest.json") | changes
    manifest["manifest_sha256"] = mf._canonical_sha256(manifest)
    art.write_json(folder / "manifest.json", manifest)


def test_newer_format_or_version(folder: Path) -> None:
    resign(folder, format="metricls-tagger/2")
    (problem,) = mf.verify_folder(folder)
    assert "written by a newer metricls; upgrade" in problem
    resign(folder, format="something-else/1")
    assert "not a metricls tagger manifest" in mf.verify_folder(folder)[0]
    manifest = art.read_json(folder / "manifest.json")
    resign(folder, format=mf.FORMAT, versions=manifest["versions"] | {"metricls": "999.0"})
    assert mf.verify_folder(folder) == []
    if mf.versions()["metricls"] != "0+unknown":
        with pytest.warns(UserWarning, match="newer than the installed"):
            mf.check_folder(folder)
    resign(folder, versions=manifest["versions"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mf.check_folder(folder)


# ---- crash test ---------------------------------------------------------------------------------
WRITER = """
import os, sys, time
import numpy as np
from pathlib import Path
from metricls import artifacts as art
from metricls import manifest as mf
from metricls import staging
rename = os.rename
def slow_rename(src, dst):  # a slow disk: widen the windows between the swap's two renames
    rename(src, dst)
    time.sleep(0.004)
os.rename = slow_rename
target, version, stop = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
blob = os.urandom(1 << 18)
os.write(1, b"ready\\n")
while version != stop:
    version += 1
    with staging.staged_dir(target) as tmp:
        art.write_json(tmp / "config.json", {"version": version})
        art.save_tensors(tmp / "t.safetensors", {"x": np.full(4096, version)}, {"v": str(version)})
        (tmp / "ann").mkdir()
        for i in range(version % 3 + 1):
            (tmp / "ann" / f"part{i}.bin").write_bytes(version.to_bytes(8, "little") + blob)
        mf.write_manifest(tmp, data={"version": version}, metrics={})
    os.write(1, b"done %d\\n" % version)
"""


def folder_version(folder: Path) -> int:
    """The one version every file of `folder` carries (asserting they all agree)."""
    assert mf.verify_folder(folder) == []
    version = art.read_json(folder / "manifest.json")["data"]["version"]
    assert art.read_json(folder / "config.json")["version"] == version
    tensors, meta = art.load_tensors(folder / "t.safetensors")
    assert meta == {"v": str(version)} and set(tensors["x"].tolist()) == {version}
    parts = sorted(p.name for p in (folder / "ann").iterdir())
    assert parts == [f"part{i}.bin" for i in range(version % 3 + 1)]
    for name in parts:
        assert (folder / "ann" / name).read_bytes()[:8] == version.to_bytes(8, "little")
    return version


def test_sigkill_during_writes_leaves_old_or_new_folder(tmp_path: Path) -> None:
    target, rng, seen, states = tmp_path / "tagger", random.Random(1234), set(), set()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", WRITER, str(target), "-1", "0"],
                   env=env, check=True, capture_output=True)
    for _ in range(24):
        start = folder_version(target)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(start), "-1"],
                                env=env, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        lines = [proc.stdout.readline() for _ in range(rng.randrange(4))]  # let k writes finish
        time.sleep(rng.uniform(0.0, 0.03))  # then kill at a random moment of a later one
        proc.send_signal(signal.SIGKILL)
        proc.wait()  # reaped: its pid is dead, so its leftovers count as stale
        done = [int(line.split()[1]) for line in lines + proc.stdout.read().splitlines()]
        last = done[-1] if done else start
        states.add((target.exists(), *sorted({name.split("-")[0] for name in siblings(target)})))
        staging.recover_dir(target)
        assert siblings(target) == []
        got = folder_version(target)
        assert got in (last, last + 1), (start, done[-3:], got)  # the old or the new folder
        seen.add(got - start)
    assert len(seen) > 3  # the kills landed after varying amounts of progress
    assert len(states) > 1, states  # ... and in varying phases: filling tmp, mid-swap, cleanup
