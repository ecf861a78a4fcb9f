"""Tagger-folder files: atomic JSON/safetensors writes, staged folder swaps, checksummed manifests.

A tagger folder holds JSON, safetensors and ANN index files plus ``manifest.json``, written last,
which lists every other file with its size and SHA-256 and carries ``manifest_sha256``, the hash
of its own canonical JSON, so that any single-byte change to any file is detected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import secrets
import shutil
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from metricls.errors import ArtifactError, InputError

log = logging.getLogger(__name__)

FORMAT = "metricls-tagger/1"
MANIFEST = "manifest.json"
# Files `metricls build-index` reads rather than rewrites: damage there needs a retrain.
TRAINED = ("encoder/", "config.json", "labels.json", "label_vectors.safetensors", "training.json")
_PACKAGES = {"numpy": ("numpy",), "torch": ("torch",), "scann": ("scann",),
             "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
             "pytorch_metric_learning": ("pytorch-metric-learning",),
             "safetensors": ("safetensors",), "sentence_transformers": ("sentence-transformers",)}


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False,
                      default=_json_default) + "\n"


def _fsync(path: str | Path) -> None:
    """fsync a file or a folder (a folder's fsync makes its renames durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, fsync the result, then os.replace it onto `path`."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON (trailing newline) atomically: temp file, fsync, replace."""
    text = _dumps(obj)
    _atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file, fsync, replace."""
    _atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def write_npy(path: str | Path, shape: tuple[int, ...], dtype: Any,
              fill: Callable[[np.ndarray], object]) -> np.ndarray:
    """Create a .npy of `shape` and `dtype` atomically, filled in place (chunk by chunk, never
    whole in memory) by ``fill(memmap)``; return it memory-mapped read-only."""
    def write(tmp: Path) -> None:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(array)
        array.flush()
        del array  # unmap before the rename

    _atomic_write(Path(path), write)
    return np.load(path, mmap_mode="r")


def read_json(path: str | Path) -> dict:
    """Read a JSON object; a missing, unparsable or non-object file raises ArtifactError."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; rebuild the folder that should hold it") from None
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path}: not UTF-8 text (byte {e.start}); the file is corrupt, "
                            "rebuild it") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} "
                            f"({e.msg}); the file is corrupt, rebuild it") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(obj).__name__}; "
                            "the file is corrupt, rebuild it")
    return obj


def save_tensors(path: str | Path, tensors: dict[str, np.ndarray],
                 metadata: dict[str, str]) -> None:
    """Write numpy arrays and string metadata to a safetensors file atomically."""
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in metadata.items()}
    _atomic_write(Path(path), lambda tmp: save_file(arrays, str(tmp), metadata=meta))


def load_tensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file as (numpy arrays, metadata); corruption raises ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; rebuild the folder that should hold it")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ArtifactError(f"{path}: not a readable safetensors file ({e}); the file is corrupt: "
                            f"run `metricls verify {path.parent}` and rebuild it") from None
    return tensors, meta


# ---- folder locks ---------------------------------------------------------------------------
LOCK_WAIT_S = 600.0  # how long a writer waits for another writer of the same folder
_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()
_LIVE: set[str] = set()  # temp folders of this process's writes in progress


def _lock_of(target: Path) -> FileLock:
    """The one FileLock object of `target` in this process (flock locks conflict between two
    objects of one process, and one object is re-entrant within a thread)."""
    path = os.path.abspath(target.parent / f".{target.name}.lock")
    with _LOCKS_GUARD:
        if path not in _LOCKS:
            _LOCKS[path] = FileLock(path, preserve_lock_file=True)
        return _LOCKS[path]


@contextlib.contextmanager
def folder_lock(target: str | Path, *, wait: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the advisory write lock of the folder `target` (the file ``.{name}.lock`` beside it).

    Every write of a tagger, catalog or report folder holds it, and so does every
    read-modify-write (a label edit holds it from load to save), so writers of one folder run
    one after another, across threads, processes and containers that share the file system.
    Re-entrant within a thread. Raises ArtifactError when the lock cannot be had in `wait`
    seconds or its file cannot be created (a read-only parent).
    """
    target = Path(target)
    lock = _lock_of(target)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("%s: waiting for another writer of this folder", target)
            lock.acquire(timeout=wait)
    except Timeout:
        raise ArtifactError(f"{target}: another process has been writing it for {wait:.0f} s "
                            f"(it holds {lock.lock_file}); retry when it is done") from None
    except PermissionError:
        raise ArtifactError(f"{target.parent}: permission denied: metricls cannot write in this "
                            "folder (it needs to create files there)") from None
    try:
        yield
    finally:
        lock.release()


def writer_active(target: str | Path) -> bool:
    """Whether another thread or process holds the write lock of `target` right now."""
    lock = _lock_of(Path(target))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # no lock file can be made here (read-only): nobody writes here either
        return False
    lock.release()
    return False


# ---- staged folders ---------------------------------------------------------------------------
def _siblings(target: Path, kind: str) -> list[Path]:
    """Each ``.{name}.{kind}-{pid}[-{hex}]`` sibling of `target` (a temp or an old folder)."""
    prefix = f".{target.name}.{kind}-"
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(target.parent):
            rest = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
            if re.fullmatch(r"\d+(-[0-9a-f]+)?", rest):
                found.append(Path(entry.path))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover_dir(target: str | Path) -> None:
    """Undo what a crashed `staged_dir` (or `write_json`) left beside `target`.

    Nothing is touched while another writer holds `target`'s lock (`folder_lock`): its temp
    and old folders are its work in progress. Otherwise every writer that left them is gone:
    if `target` is missing, the newest ``.{name}.old-*`` sibling is renamed back; then the
    other ``.{name}.old-*`` and the ``.{name}.tmp-*`` siblings are deleted (except this
    process's own writes in progress).
    """
    target = Path(target)
    if not (_siblings(target, "old") or _siblings(target, "tmp")):
        return
    lock = _lock_of(target)
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):  # a live writer, or a folder nobody can write in
        return
    try:
        olds = _siblings(target, "old")
        if olds and not os.path.lexists(target):
            newest = max(olds, key=lambda path: path.stat().st_ctime)
            os.rename(newest, target)
            _fsync(target.parent)
            olds.remove(newest)
        for path in [*olds, *_siblings(target, "tmp")]:
            if os.path.abspath(path) not in _LIVE:
                _remove(path)
    finally:
        lock.release()


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in [*filenames, "."]:
            _fsync(os.path.join(dirpath, name))


@contextlib.contextmanager
def _temp_beside(target: Path) -> Iterator[Path]:
    """A fresh ``.{name}.tmp-{pid}-{hex}`` folder beside `target`, deleted when the block
    raises; `recover_dir` leaves it alone while the block runs."""
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    _LIVE.add(os.path.abspath(tmp))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _LIVE.discard(os.path.abspath(tmp))


@contextlib.contextmanager
def scratch_dir(near: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `near` (same disk: /tmp may live in RAM), removed afterwards.

    Named like `staged_dir`'s temp folders, so `recover_dir` removes it after a crash.
    """
    near = Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    with _temp_beside(near) as path:
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `target`; on success swap it in place of `target`.

    The whole write holds `target`'s lock (`folder_lock`). Crash safety: the temp folder
    ``.{name}.tmp-{pid}-{hex}`` is filled and fsynced (every file, every folder) before any
    rename, so `target` only ever names a complete folder. The swap is ``rename(target,
    .{name}.old-{pid}-{hex})``, ``rename(tmp, target)``, fsync of the parent, then removal of
    the old folder; each rename is atomic within one filesystem. A crash before the first
    rename leaves `target` intact (plus a stale tmp); between the renames leaves no `target`
    but a complete ``.old``, which `recover_dir` renames back once the lock is free; after the
    second leaves the complete new `target` (plus a stale ``.old``). So after `recover_dir`,
    `target` is the whole old or the whole new folder, never a mix. If the body raises, the
    temp folder is deleted and `target` is untouched.

    It replaces whatever `target` holds: callers check first that it is theirs
    (`check_output`).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise ArtifactError(f"{target.parent}: permission denied: cannot create this "
                            "folder") from None
    with folder_lock(target):
        recover_dir(target)
        if os.path.lexists(target) and not target.is_dir():
            raise ArtifactError(f"{target}: exists and is not a folder; move it away and rerun")
        try:
            with _temp_beside(target) as tmp:
                yield tmp
                _fsync_tree(tmp)
                _swap(tmp, target)
        except PermissionError as exc:
            raise ArtifactError(f"{exc.filename or target}: permission denied: metricls cannot "
                                "write there") from None


def _swap(tmp: Path, target: Path) -> None:
    """Put the complete folder `tmp` in place of `target` (see `staged_dir`)."""
    if os.path.lexists(target):
        old = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(target, old)
        os.rename(tmp, target)
        _fsync(target.parent)
        _remove(old)
    else:
        os.rename(tmp, target)
        _fsync(target.parent)


# ---- what a command may replace ---------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (both absolute, links resolved)."""
    return path == folder or folder in path.parents


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def check_output(target: str | Path, kind: str, *, overwrite: bool = False,
                 inputs: tuple[str | Path, ...] = (), in_place: bool = False) -> None:
    """Refuse to write a `kind` folder at `target` unless that destroys nothing of the user's.

    A command writes a new folder, an empty one, or replaces one that is recognisably its own
    kind of output (`FOLDER_KINDS`: a tagger folder with its manifest, a catalog with its
    marker, a report with its report.json) and holds nothing else, and then only with
    `overwrite` (or `in_place`: a command that edits that very folder, such as build-index or a
    label edit). Never the current folder or one of its parents, never a folder that holds
    one of the command's `inputs`.

    Raises:
        InputError: naming `target` and what to do instead.
    """
    where = _real(target)
    if _inside(_real(Path.cwd()), where):
        raise InputError(f"{target}: is the current folder or one of its parents; write to a "
                         "new folder below it")
    for source in inputs:
        if not (in_place and _real(source) == where) and _inside(_real(source), where):
            raise InputError(f"{target}: holds this command's input {source}; it would be "
                             "replaced: choose another output folder")
    if not os.path.lexists(target):
        return
    if not os.path.isdir(target):
        raise InputError(f"{target}: exists and is not a folder; choose another output")
    if not any(os.scandir(target)):
        return
    foreign = FOLDER_KINDS[kind](Path(target))
    if foreign:
        raise InputError(f"{target}: {foreign}; metricls replaces only its own {kind} "
                         "folders: choose another output, or move that away first")
    if not (overwrite or in_place):
        raise InputError(f"{target}: already holds a {kind}; pass --overwrite to replace it")


def _not_ours(folder: Path, own: set[str], marker: str, kind: str) -> str | None:
    """Why `folder` is not a `kind` folder of ours: no `marker` file, or a file not in `own`."""
    if not (folder / marker).is_file():
        return f"exists and is not a metricls {kind} folder (no {marker})"
    stray = [rel for rel in _walk_files(folder) if rel not in own and rel != MANIFEST]
    if stray:
        return f"holds {folder / stray[0]}, which metricls did not write"
    return None


def _tagger_files(folder: Path) -> str | None:
    try:
        files = read_json(folder / MANIFEST).get("files")
    except ArtifactError:
        files = None
    if not isinstance(files, dict):
        return _not_ours(folder, set(), MANIFEST, "tagger") or (
            f"its {MANIFEST} is unreadable, so it is not recognisably a metricls tagger folder")
    return _not_ours(folder, set(files), MANIFEST, "tagger")


def _catalog_files(folder: Path) -> str | None:
    own = {p.name for p in folder.glob("part-*.parquet")} | {"_catalog.json"}
    return _not_ours(folder, own, "_catalog.json", "catalog")


def _report_files(folder: Path) -> str | None:
    try:
        figures = read_json(folder / "report.json").get("figures", {})
    except ArtifactError:
        figures = {}
    own = {"report.json", "index.html",
           *(map(str, figures.values()) if isinstance(figures, dict) else ())}
    return _not_ours(folder, own, "report.json", "report")


# the kinds of folder metricls writes, and how each recognises itself (None: it is ours)
FOLDER_KINDS: dict[str, Callable[[Path], str | None]] = {
    "tagger": _tagger_files, "catalog": _catalog_files, "report": _report_files}


# ---- manifests --------------------------------------------------------------------------------
def _dist_version(*names: str) -> str | None:
    for name in names:
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            return importlib_metadata.version(name)
    return None


def versions() -> dict[str, str]:
    """Versions of metricls, python and the libraries a tagger depends on ("absent" if missing).

    Read from package metadata only: nothing is imported (torch in particular).
    """
    own = _dist_version("metricls") or getattr(sys.modules.get("metricls"), "__version__", None)
    found = {"metricls": own or "0+unknown", "python": platform.python_version()}
    found |= {key: _dist_version(*names) or "absent" for key, names in _PACKAGES.items()}
    return found


def _canonical_sha256(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _walk_files(folder: Path) -> list[str]:
    """POSIX paths relative to `folder` of every file under it but the manifest, sorted."""
    found = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def write_manifest(folder: str | Path, *, data: dict, metrics: dict,
                   extra: dict | None = None) -> dict:
    """Checksum every file under `folder` and write ``manifest.json`` last; return the manifest."""
    folder = Path(folder)
    manifest: dict[str, Any] = {"format": FORMAT, "created": datetime.now(UTC).isoformat(),
                                "versions": versions(), "data": data, "metrics": metrics}
    clash = set(extra or {}) & {*manifest, "files", "manifest_sha256"}
    if clash:
        raise ValueError(f"write_manifest: extra keys {sorted(clash)} are reserved")
    manifest |= dict(extra or {})
    manifest["files"] = {rel: {"sha256": sha256_file(folder / rel),
                               "bytes": (folder / rel).stat().st_size}
                         for rel in _walk_files(folder)}
    manifest = json.loads(_dumps(manifest))  # plain JSON types, exactly as read back
    manifest["manifest_sha256"] = _canonical_sha256(manifest)
    write_json(folder / MANIFEST, manifest)
    return manifest


def _fix(folder: Path, rel: str) -> str:
    """How to repair damage to `rel`: rebuild the index, or retrain if build-index reads it."""
    if not rel.startswith(TRAINED):
        return f"rebuild with `metricls build-index {folder}`"
    return (f"retrain with `metricls train CONFIG --out {folder}`, "
            f"then `metricls build-index {folder}`")


def _read_manifest(folder: Path) -> tuple[dict | None, list[str]]:
    """The manifest (None if unusable) and the problems with manifest.json itself."""
    path = folder / MANIFEST
    if not folder.is_dir():
        olds = _siblings(folder, "old")
        hint = ""
        if olds and writer_active(folder):
            hint = "; a running writer is replacing it: retry when it is done"
        elif olds:
            hint = (f"; {olds[0]} holds the previous version: loading the folder "
                    "(Tagger.load) or `metricls.artifacts.recover_dir` restores it")
        return None, [f"{folder}: no such folder{hint}"]
    if not path.is_file():
        return None, [f"{path}: missing (not a tagger folder, or its write was interrupted); "
                      f"{_fix(folder, MANIFEST)}"]
    try:
        manifest = read_json(path)
    except ArtifactError as e:
        return None, [str(e)]
    fmt = str(manifest.get("format", ""))
    name, _, major = fmt.partition("/")
    major = major.split(".")[0]
    if name != FORMAT.split("/")[0] or not major.isdigit():
        return None, [f"{path}: unknown format {fmt!r}, not a metricls tagger manifest"]
    if int(major) > int(FORMAT.split("/")[1]):
        return None, [f"{path}: format {fmt} was written by a newer metricls; upgrade metricls"]
    problems = []
    if manifest.get("manifest_sha256") != _canonical_sha256(manifest):
        problems.append(f"{path}: checksum mismatch (manifest altered); {_fix(folder, MANIFEST)}")
    elif path.read_bytes() != _dumps(manifest).encode():
        problems.append(f"{path}: altered (not byte-identical to what metricls wrote); "
                        f"{_fix(folder, MANIFEST)}")
    if not isinstance(manifest.get("files"), dict):
        return None, [*problems, f"{path}: no 'files' table; {_fix(folder, MANIFEST)}"]
    return manifest, problems


def _check_entry(folder: Path, rel: str, entry: Any) -> str | None:
    path = folder / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts or not isinstance(entry, dict):
        return f"{folder / MANIFEST}: bad entry {rel!r}; {_fix(folder, MANIFEST)}"
    if not path.is_file():
        return f"{path}: missing; {_fix(folder, rel)}"
    size = path.stat().st_size
    if size != entry.get("bytes"):
        return (f"{path}: {size} bytes, manifest says {entry.get('bytes')} (truncated or "
                f"altered); {_fix(folder, rel)}")
    if sha256_file(path) != entry.get("sha256"):
        return f"{path}: checksum mismatch (file altered or truncated); {_fix(folder, rel)}"
    return None


def verify_folder(folder: str | Path) -> list[str]:
    """Check a tagger folder against its manifest; return its problems (empty list = intact).

    Problems about files the manifest does not list start with "unexpected file" (warn-level).
    """
    folder = Path(folder)
    manifest, problems = _read_manifest(folder)
    if manifest is None:
        return problems
    files = manifest["files"]
    problems += [p for rel, e in files.items() if (p := _check_entry(folder, rel, e))]
    problems += [f"unexpected file {folder / rel}: not in the manifest; delete it or "
                 f"{_fix(folder, rel)}" for rel in _walk_files(folder) if rel not in files]
    return problems


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(x) for x in match.group().split(".")) if match else ()


def check_folder(folder: str | Path) -> dict:
    """Verify a tagger folder and return its manifest, or raise ArtifactError on damage.

    First undoes an interrupted `staged_dir` swap (`recover_dir`). Stray unlisted files and a
    manifest from a newer metricls only warn.
    """
    folder = Path(folder)
    if not folder.exists() and _siblings(folder, "old") and writer_active(folder):
        with folder_lock(folder):  # a writer between its two renames: done in a moment
            pass
    with contextlib.suppress(OSError):
        recover_dir(folder)
    problems = verify_folder(folder)
    hard = [p for p in problems if not p.startswith("unexpected file")]
    for line in problems:
        if line not in hard:
            warnings.warn(line, stacklevel=2)
    if hard:
        more = f" (and {len(hard) - 1} more: run `metricls verify {folder}`)"
        raise ArtifactError(hard[0] + (more if len(hard) > 1 else ""))
    manifest = read_json(folder / MANIFEST)
    written, installed = manifest.get("versions", {}).get("metricls", ""), versions()["metricls"]
    if installed != "0+unknown" and _release(written) > _release(installed):
        warnings.warn(f"{folder} was written by metricls {written}, newer than the installed "
                      f"{installed}; upgrade metricls if loading fails", stacklevel=2)
    return manifest
