"""Folders written whole or not at all: a temp folder beside the target, swapped in with two
renames under the folder's write lock (an advisory file lock beside it), and the recovery of
what a crashed writer left, decided by that lock (never by a process id).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from metricls.artifacts import fsync_path
from metricls.errors import ArtifactError

log = logging.getLogger(__name__)


# ---- folder locks ---------------------------------------------------------------------------
LOCK_WAIT_S = 600.0  # how long a writer waits for another writer of the same folder
_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()
_LIVE: set[str] = set()  # temp folders of this process's writes in progress


def real_path(path: str | Path) -> Path:
    """The folder a path names, as the file system resolves it: absolute, symbolic links
    followed, ``..`` applied (also after components that do not exist yet). Every folder
    operation works on it, so a link and its target share one lock and one swap."""
    return Path(os.path.realpath(os.path.abspath(path)))


def _lock_of(target: Path) -> FileLock:
    """The one FileLock object of `target` in this process (flock locks conflict between two
    objects of one process, and one object is re-entrant within a thread)."""
    target = real_path(target)
    path = str(target.parent / f".{target.name}.lock")
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


@contextlib.contextmanager
def folder_locks(*targets: str | Path) -> Iterator[None]:
    """`folder_lock` of several folders, taken in one order (by real path) whatever the order
    given, so that two commands locking the same folders never wait for each other forever."""
    with contextlib.ExitStack() as stack:
        for path in sorted({real_path(t) for t in targets}):
            stack.enter_context(folder_lock(path))
        yield


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
def siblings(target: Path, kind: str) -> list[Path]:
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
    target = real_path(target)
    if not (siblings(target, "old") or siblings(target, "tmp")):
        return
    lock = _lock_of(target)
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):  # a live writer, or a folder nobody can write in
        return
    try:
        olds = siblings(target, "old")
        if olds and not os.path.lexists(target):
            newest = max(olds, key=lambda path: path.stat().st_ctime)
            os.rename(newest, target)
            fsync_path(target.parent)
            olds.remove(newest)
        for path in [*olds, *siblings(target, "tmp")]:
            if os.path.abspath(path) not in _LIVE:
                _remove(path)
    finally:
        lock.release()


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in [*filenames, "."]:
            fsync_path(os.path.join(dirpath, name))


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
    near = real_path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    with _temp_beside(near) as path:
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(target: str | Path,
               check: Callable[[], object] | None = None) -> Iterator[Path]:
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
    (`outputs.check_output`), and pass that check as `check` too, run under the lock before
    the body and again just before the swap, so that nothing put there since is replaced.
    `target` is resolved first (`real_path`): a link is written through, not replaced.
    """
    target = real_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise ArtifactError(f"{target.parent}: permission denied: cannot create this "
                            "folder") from None
    except (FileExistsError, NotADirectoryError):
        raise ArtifactError(f"{target.parent}: a file is in the way; expected a folder") from None
    with folder_lock(target):
        recover_dir(target)
        if check is not None:
            check()
        if os.path.lexists(target) and not target.is_dir():
            raise ArtifactError(f"{target}: exists and is not a folder; move it away and rerun")
        try:
            with _temp_beside(target) as tmp:
                yield tmp
                _fsync_tree(tmp)
                if check is not None:
                    check()  # again: a file of the user's may have landed there meanwhile
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
        fsync_path(target.parent)
        _remove(old)
    else:
        os.rename(tmp, target)
        fsync_path(target.parent)
