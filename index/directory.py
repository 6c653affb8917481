"""The layout of an index directory, its locks, and which files may be deleted.

::

    DIR/
      commit-0000000007.json   commit points (``index.commit``); the newest is the index
      segments/<name>/         immutable segments (``index.format``)
      deletes/<name>.<gen>.del per-segment deleted-doc bitsets (``index.deletes``)
      wal/<first seq>.wal      the write-ahead log (``index.wal``)
      locks/write.lock         held by the one process that builds segments and commits
      locks/wal.lock           taken in turn by every process that appends to the log
      locks/commit-<gen>.lock  shared by every reader of that commit (a pin)

The directory itself is never renamed or removed. Lock files are opened and locked, never
replaced. A reader pins the commit it reads (a shared ``flock`` on its lock file) for as long
as it holds it; the writer deletes a commit, and the segments and delete files only it
names, once it can take that lock exclusively, that is, once no process reads it.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from lsr.index import storage
from lsr.index.commit import DELETES_DIR, SEGMENTS_DIR, Commit, commit_file_name, generations, read_commit
from lsr.index.wal import LOCKS_DIR, WAL_DIR, WAL_LOCK

WRITE_LOCK = "write.lock"


class IndexBusyError(RuntimeError):
    """Another process holds the index's write lock."""


def init_layout(directory: Path) -> None:
    """Create the subdirectories and lock files of a new index durably."""
    for sub in (SEGMENTS_DIR, DELETES_DIR, WAL_DIR, LOCKS_DIR):
        storage.make_dir(Path(directory) / sub)
    for name in (WRITE_LOCK, WAL_LOCK):
        (Path(directory) / LOCKS_DIR / name).touch(exist_ok=True)


def is_index(directory: Path) -> bool:
    return bool(generations(directory))


def pin_lock_path(directory: Path, generation: int) -> Path:
    return Path(directory) / LOCKS_DIR / f"commit-{generation:010d}.lock"


class CommitPin:
    """A reader's shared lock on one commit: while it is held, nothing the commit names is deleted."""

    def __init__(self, handle, generation: int) -> None:
        self._handle = handle
        self.generation = generation

    @classmethod
    def take(cls, directory: Path, generation: int) -> "CommitPin | None":
        """Pin a commit, or None when it was deleted meanwhile (read the newest one again)."""
        try:
            handle = open(pin_lock_path(directory, generation), "a")
        except FileNotFoundError:  # the locks directory itself is missing: not an index
            return None
        fcntl.flock(handle, fcntl.LOCK_SH)
        if not (Path(directory) / commit_file_name(generation)).is_file():
            handle.close()  # the writer deleted it before we locked
            return None
        return cls(handle, generation)

    def release(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class WriteLock:
    """The index's write lock (``locks/write.lock``): one process at a time builds and commits."""

    def __init__(self, handle) -> None:
        self._handle = handle

    @classmethod
    def acquire(cls, directory: Path, wait: bool = False) -> "WriteLock":
        """Take the lock; without ``wait``, `IndexBusyError` at once if another process holds it."""
        handle = open(Path(directory) / LOCKS_DIR / WRITE_LOCK, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as error:
            handle.close()
            raise IndexBusyError(f"{directory} is being written by another process (a server, a merge or an "
                                 f"indexing job holds its write lock); try again when it has finished") from error
        return cls(handle)

    @classmethod
    def try_acquire(cls, directory: Path) -> "WriteLock | None":
        try:
            return cls.acquire(directory)
        except IndexBusyError:
            return None

    def release(self) -> None:
        if not self._handle.closed:
            self._handle.close()


def collect_garbage(directory: Path, newest: Commit, in_flight: set[str] = frozenset()) -> list[str]:
    """Delete what neither the newest commit nor any pinned commit needs (writer only).

    Args:
        directory: the index directory.
        newest: the newest commit (durable).
        in_flight: segment names being built or about to be committed by this writer.

    Returns:
        The paths removed, relative to the directory.
    """
    directory = Path(directory)
    needed = set(newest.files())
    removed = []
    for generation in generations(directory):
        if generation == newest.generation:
            continue
        if _delete_unpinned_commit(directory, generation):
            removed.append(commit_file_name(generation))
        else:
            try:
                needed |= read_commit(directory, generation).files()
            except Exception:  # a damaged old commit that someone pins: keep everything it could name
                return removed
    for sub in (SEGMENTS_DIR, DELETES_DIR):
        for path in sorted((directory / sub).iterdir()) if (directory / sub).is_dir() else ():
            relative = f"{sub}/{path.name}"
            if relative in needed or path.name in in_flight or _building_name(path.name) in in_flight:
                continue
            storage.remove(path)
            removed.append(relative)
    for path in list(directory.glob(".commit-*.tmp")) + list(directory.glob("build-tmp-*")):
        if path.name not in in_flight:  # left by a crashed writer or indexing job
            storage.remove(path)
    _remove_stale_pins(directory)
    return removed


def _building_name(name: str) -> str:
    """``.s000001-abcd1234.building-xxxx`` -> ``s000001-abcd1234`` (a segment being built)."""
    return name[1:].split(".building-")[0] if name.startswith(".") else name


def _delete_unpinned_commit(directory: Path, generation: int) -> bool:
    """Delete an old commit file if no reader pins it; True if deleted."""
    lock_path = pin_lock_path(directory, generation)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        storage.remove(directory / commit_file_name(generation))
        storage.remove(lock_path)
    return True


def _remove_stale_pins(directory: Path) -> None:
    """Lock files of commits that no longer exist (left by a crash), when nobody holds them."""
    existing = set(generations(directory))
    for path in (directory / LOCKS_DIR).glob("commit-*.lock"):
        try:
            generation = int(path.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if generation in existing:
            continue
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if not (directory / commit_file_name(generation)).exists():
                storage.remove(path)
