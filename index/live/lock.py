"""Who may touch an index directory: servers share it, compaction needs it alone.

A server holds a shared ``flock`` on ``DIR/.serving.lock`` for its lifetime (every uvicorn
worker takes one); `lsr index compact` asks for an exclusive one without waiting and refuses
to run while any server holds the directory, since writes acknowledged during a compaction
would land in the log of the index being replaced.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".serving.lock"


class IndexBusyError(RuntimeError):
    """The index directory is being served."""


def hold_shared(directory: str | Path):
    """Take the shared serving lock; returns the open handle (closing it releases the lock)."""
    handle = open(Path(directory) / LOCK_FILE, "a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


@contextmanager
def exclusive(directory: str | Path):
    """Hold the directory alone for the duration, or raise `IndexBusyError` at once."""
    with open(Path(directory) / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise IndexBusyError(f"{directory} is being served (lsr serve holds it); stop the server first") from error
        yield
