"""Checksummed manifests: ``manifest.json``, written last into a folder, lists every other file
with its size and SHA-256 and carries ``manifest_sha256``, the hash of its own canonical JSON, so
that any single-byte change to any file is detected (corruption; it does not stop tampering:
anyone can recompute it). `check_folder` verifies a folder before it is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import sys
import warnings
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from metricls.artifacts import dumps_json, read_json, sha256_file, write_json
from metricls.errors import ArtifactError
from metricls.staging import folder_lock, recover_dir, siblings, writer_active

FORMAT = "metricls-tagger/1"
MANIFEST = "manifest.json"
# Files `metricls build-index` reads rather than rewrites: damage there needs a retrain.
TRAINED = ("encoder/", "config.json", "labels.json", "label_vectors.safetensors", "training.json")
_PACKAGES = {"numpy": ("numpy",), "torch": ("torch",), "scann": ("scann",),
             "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
             "pytorch_metric_learning": ("pytorch-metric-learning",),
             "safetensors": ("safetensors",), "sentence_transformers": ("sentence-transformers",)}


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


def walk_files(folder: Path) -> list[str]:
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
                         for rel in walk_files(folder)}
    manifest = json.loads(dumps_json(manifest))  # plain JSON types, exactly as read back
    manifest["manifest_sha256"] = _canonical_sha256(manifest)
    write_json(folder / MANIFEST, manifest)
    return manifest


def remedy_for(folder: Path, rel: str) -> str:
    """How to repair damage to `rel`: rebuild the index, or retrain if build-index reads it."""
    if not rel.startswith(TRAINED):
        return f"rebuild with `metricls build-index {folder}`"
    return (f"retrain with `metricls train CONFIG --out {folder}`, "
            f"then `metricls build-index {folder}`")


def _read_manifest(folder: Path) -> tuple[dict | None, list[str]]:
    """The manifest (None if unusable) and the problems with manifest.json itself."""
    path = folder / MANIFEST
    if not folder.is_dir():
        olds = siblings(folder, "old")
        hint = ""
        if olds and writer_active(folder):
            hint = "; a running writer is replacing it: retry when it is done"
        elif olds:
            hint = (f"; {olds[0]} holds the previous version: loading the folder "
                    "(Tagger.load) or `metricls.staging.recover_dir` restores it")
        return None, [f"{folder}: no such folder{hint}"]
    if not path.is_file():
        return None, [f"{path}: missing (not a tagger folder, or its write was interrupted); "
                      f"{remedy_for(folder, MANIFEST)}"]
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
        problems.append(f"{path}: checksum mismatch (manifest altered); "
                        f"{remedy_for(folder, MANIFEST)}")
    elif path.read_bytes() != dumps_json(manifest).encode():
        problems.append(f"{path}: altered (not byte-identical to what metricls wrote); "
                        f"{remedy_for(folder, MANIFEST)}")
    if not isinstance(manifest.get("files"), dict):
        return None, [*problems, f"{path}: no 'files' table; {remedy_for(folder, MANIFEST)}"]
    return manifest, problems


def _check_entry(folder: Path, rel: str, entry: Any) -> str | None:
    path = folder / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts or not isinstance(entry, dict):
        return f"{folder / MANIFEST}: bad entry {rel!r}; {remedy_for(folder, MANIFEST)}"
    if not path.is_file():
        return f"{path}: missing; {remedy_for(folder, rel)}"
    size = path.stat().st_size
    if size != entry.get("bytes"):
        return (f"{path}: {size} bytes, manifest says {entry.get('bytes')} (truncated or "
                f"altered); {remedy_for(folder, rel)}")
    if sha256_file(path) != entry.get("sha256"):
        return f"{path}: checksum mismatch (file altered or truncated); {remedy_for(folder, rel)}"
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
                 f"{remedy_for(folder, rel)}" for rel in walk_files(folder) if rel not in files]
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
    if not folder.exists() and siblings(folder, "old") and writer_active(folder):
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
