"""Tagger-folder files: atomic JSON/safetensors writes, staged folder swaps, checksummed manifests.

A tagger folder holds JSON, safetensors and ANN index files plus ``manifest.json``, written last,
which lists every other file with its size and SHA-256 and carries ``manifest_sha256``, the hash
of its own canonical JSON, so that any single-byte change to any file is detected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from metricls.errors import ArtifactError

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


# ---- staged folders ---------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def _siblings(target: Path, kind: str) -> list[tuple[Path, int]]:
    """(path, owner pid) of each ``.{name}.{kind}-{pid}[-{hex}]`` sibling of `target`."""
    prefix = f".{target.name}.{kind}-"
    pattern = re.compile(r"(\d+)-[0-9a-f]+" if kind == "tmp" else r"(\d+)")
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(target.parent):
            rest = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
            if match := pattern.fullmatch(rest):
                found.append((Path(entry.path), int(match.group(1))))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover_dir(target: str | Path) -> None:
    """Undo what a crashed `staged_dir` (or `write_json`) left beside `target`.

    If `target` is missing and a ``.{name}.old-{pid}`` sibling of a dead process exists, it is
    renamed back (the newest, if several). Stale ``.{name}.tmp-*`` and, once `target` exists,
    ``.{name}.old-*`` siblings of dead processes are deleted.
    """
    target = Path(target)
    olds = [(p, pid) for p, pid in _siblings(target, "old") if not _pid_alive(pid)]
    if olds and not os.path.lexists(target):
        newest = max(olds, key=lambda item: item[0].stat().st_ctime)[0]
        os.rename(newest, target)
        _fsync(target.parent)
        olds = [item for item in olds if item[0] != newest]
    stale = olds + [(p, pid) for p, pid in _siblings(target, "tmp") if not _pid_alive(pid)]
    for path, _ in stale:
        _remove(path)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in [*filenames, "."]:
            _fsync(os.path.join(dirpath, name))


@contextlib.contextmanager
def scratch_dir(near: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `near` (same disk: /tmp may live in RAM), removed afterwards.

    Named like `staged_dir`'s temp folders, so `recover_dir` removes it after a crash.
    """
    near = Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    path = near.parent / f".{near.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `target`; on success swap it in place of `target`.

    Crash safety: the temp folder ``.{name}.tmp-{pid}-{hex}`` is filled and fsynced (every file,
    every folder) before any rename, so `target` only ever names a complete folder. The swap is
    ``rename(target, .{name}.old-{pid})``, ``rename(tmp, target)``, fsync of the parent, then
    removal of the old folder; each rename is atomic within one filesystem. A crash before the
    first rename leaves `target` intact (plus a stale tmp); between the renames leaves no
    `target` but a complete ``.old-{pid}``, which `recover_dir` renames back; after the second
    leaves the complete new `target` (plus a stale ``.old``). So after `recover_dir`, `target` is
    the whole old or the whole new folder, never a mix. If the body raises, the temp folder is
    deleted and `target` is untouched. Concurrent writers of one target are not supported.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    if os.path.lexists(target) and not target.is_dir():
        raise ArtifactError(f"{target}: exists and is not a folder; move it away and rerun")
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.lexists(target):
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        _remove(old)
        os.rename(target, old)
        os.rename(tmp, target)
        _fsync(target.parent)
        _remove(old)
    else:
        os.rename(tmp, target)
        _fsync(target.parent)


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
        hint = (f"; {olds[0][0]} holds the previous version: `metricls.artifacts.recover_dir`"
                " restores it") if olds else ""
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
