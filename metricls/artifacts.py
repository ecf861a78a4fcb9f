"""Files written whole or not at all: atomic JSON, bytes, .npy and safetensors writes, and reads
that turn damage into one ArtifactError naming the file.

Folders are staged and swapped by `staging.py`, checksummed by `manifest.py`; which folder a
command may replace is `outputs.py`'s rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from metricls.errors import ArtifactError


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


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False,
                      default=_json_default) + "\n"


def fsync_path(path: str | Path) -> None:
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
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON (trailing newline) atomically: temp file, fsync, replace."""
    text = dumps_json(obj)
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
