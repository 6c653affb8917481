"""Other libraries' chatter (ir_datasets' download logs, the JVM's warnings) into a log file.

They write to file descriptor 2 directly (native code) or through handlers bound to it, so the
descriptor itself is pointed at ``$LSR_CACHE_DIR/logs/<name>.log`` (default
``~/.cache/lsr/logs``) for the duration, and our own errors still reach the terminal after.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path


def log_path(name: str) -> Path:
    """Where ``name``'s output goes (the directory is made on first use)."""
    directory = Path(os.environ.get("LSR_CACHE_DIR") or Path.home() / ".cache" / "lsr") / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.log"


@contextmanager
def stderr_to_log(name: str):
    """Everything this process writes to stderr meanwhile goes to `log_path` ``(name)``
    (appended); yields that path. Affects every thread: for command-line steps."""
    path = log_path(name)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
            try:
                yield path
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
