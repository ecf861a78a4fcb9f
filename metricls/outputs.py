"""What a command may replace: only a folder that is recognisably its own kind of output and
holds nothing else, never its input, the current folder or a parent (`check_output`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from metricls.artifacts import read_json
from metricls.errors import ArtifactError, InputError
from metricls.manifest import MANIFEST, walk_files
from metricls.staging import real_path


# ---- what a command may replace ---------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (both real paths)."""
    return path == folder or folder in path.parents


def check_output(target: str | Path, kind: str, *, overwrite: bool = False,
                 inputs: tuple[str | Path, ...] = (), in_place: bool = False) -> None:
    """Refuse to write a `kind` folder at `target` unless that destroys nothing of the user's.

    A command writes a new folder, an empty one, or replaces one that is recognisably its own
    kind of output (`FOLDER_KINDS`: a tagger folder with its manifest, a catalog with its
    marker, a report with its report.json) and holds nothing else, and then only with
    `overwrite` (or `in_place`: a command that edits that very folder, such as build-index or a
    label edit). Never the current folder or one of its parents, never a folder that holds
    one of the command's `inputs` or lies inside one. Paths are compared as the file system
    resolves them (links followed, ``..`` applied).

    Raises:
        InputError: naming `target` and what to do instead.
    """
    where = real_path(target)
    if _inside(real_path(Path.cwd()), where):
        raise InputError(f"{target}: is the current folder or one of its parents; write to a "
                         "new folder below it")
    for source in map(real_path, inputs):
        if in_place and source == where:
            continue
        if _inside(source, where):
            raise InputError(f"{target}: holds this command's input {source}; it would be "
                             "replaced: choose another output folder")
        if source.is_dir() and _inside(where, source):
            raise InputError(f"{target}: lies inside this command's input {source}; choose an "
                             "output folder outside it")
    ancestor = next(p for p in (where, *where.parents) if os.path.lexists(p))
    if ancestor != where and not ancestor.is_dir():
        raise InputError(f"{target}: {ancestor} is a file, not a folder; choose another output")
    if not os.path.lexists(where):
        return
    if not where.is_dir():
        raise InputError(f"{target}: exists and is not a folder; choose another output")
    if not any(os.scandir(where)):
        return
    foreign = FOLDER_KINDS[kind](where)
    if foreign:
        raise InputError(f"{target}: {foreign}; metricls replaces only its own {kind} "
                         "folders: choose another output, or move that away first")
    if not (overwrite or in_place):
        raise InputError(f"{target}: already holds a {kind}; pass --overwrite to replace it")


def _not_ours(folder: Path, own: set[str], marker: str, kind: str) -> str | None:
    """Why `folder` is not a `kind` folder of ours: no `marker` file, or a file not in `own`."""
    if not (folder / marker).is_file():
        return f"exists and is not a metricls {kind} folder (no {marker})"
    stray = [rel for rel in walk_files(folder) if rel not in own and rel != MANIFEST]
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
