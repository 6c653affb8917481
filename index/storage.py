"""The one module through which the index makes anything durable: fsync, rename, remove.

Files may be written by any means (``np.save``, memory maps, plain writes); they count as
written only once `fsync_file` has run on them, and a name counts as created, renamed or
removed only once `fsync_dir` has run on its directory. Every function here reports what it
did to an optional recorder (`set_recorder`), so a crash test can rebuild the directory that
a power cut after any fsync would leave (only what was fsynced survives: `index.crashsim`).

Rules the rest of the package follows:

* an acknowledged write is fsynced (file, then directory) before the answer;
* a file that others read by name is written under a temporary name, fsynced, renamed into
  place and its directory fsynced (`write_atomic`);
* lock files are opened, never replaced.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Protocol


class Recorder(Protocol):
    """What a crash test records (see ``index.crashsim``)."""

    def synced_file(self, path: Path) -> None: ...

    def synced_dir(self, path: Path) -> None: ...

    def removing(self, path: Path) -> None: ...


_recorder: Recorder | None = None


def set_recorder(recorder: Recorder | None) -> None:
    """Report every fsync and removal to ``recorder`` (None stops reporting)."""
    global _recorder
    _recorder = recorder


class ChangeWatch:
    """Tells cheaply (one ``stat``) whether a directory's entries or a file's size may have changed.

    A directory's modification time changes when a name is added, renamed or removed; but the
    kernel's clock for it is coarse (a few ms), so a change within the same tick as the last look
    can leave it equal. A time within `AMBIGUOUS_SECONDS` of now therefore counts as changed:
    the caller looks again, and only quiet directories are trusted.
    """

    AMBIGUOUS_SECONDS = 0.05

    def __init__(self) -> None:
        self._seen: dict[str, tuple] = {}

    def changed(self, path: str | Path) -> bool:
        key = os.fspath(path)
        try:
            st = os.stat(key)
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if time.time_ns() - st.st_mtime_ns < self.AMBIGUOUS_SECONDS * 1e9:
                self._seen[key] = None
                return True
        previous = self._seen.get(key, ())
        self._seen[key] = stamp
        return stamp != previous or stamp is None


def fsync_file(path: str | Path) -> None:
    """Make a file's content durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if _recorder is not None:
        _recorder.synced_file(Path(path))


def fsync_fd(fd: int, path: str | Path) -> None:
    """`fsync_file` on an open descriptor (the log's appends); ``path`` names it for the recorder."""
    os.fsync(fd)
    if _recorder is not None:
        _recorder.synced_file(Path(path))


def fsync_dir(path: str | Path) -> None:
    """Make the names in a directory (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if _recorder is not None:
        _recorder.synced_dir(Path(path))


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory under ``root`` (a finished segment), deepest first."""
    root = Path(root)
    for directory, _, files in os.walk(root, topdown=False):
        for name in sorted(files):
            fsync_file(Path(directory) / name)
        fsync_dir(directory)


def make_dir(path: str | Path) -> Path:
    """Create a directory (and missing parents) durably: each new one's parent is fsynced."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        fsync_dir(directory.parent)
    return path


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write a whole file durably under its final name: temporary file, fsync, rename, fsync dir.

    A reader sees the old file or the new one, never a part; after a crash, one of the two.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            fsync_fd(handle.fileno(), tmp)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def rename(source: str | Path, target: str | Path) -> None:
    """Rename durably (the target must not exist when ``source`` is a directory)."""
    source, target = Path(source), Path(target)
    os.rename(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def remove(path: str | Path, durable: bool = False) -> None:
    """Remove a file or a directory tree (missing is fine); ``durable`` fsyncs the parent."""
    path = Path(path)
    if _recorder is not None and path.exists():
        _recorder.removing(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    if durable and path.parent.exists():
        fsync_dir(path.parent)


def truncate(fd: int, path: str | Path, size: int) -> None:
    """Cut an open file to ``size`` bytes durably."""
    os.ftruncate(fd, size)
    fsync_fd(fd, path)
