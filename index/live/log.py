"""The append-only update log of an index directory (``updates.log``, JSON lines).

Every add and delete accepted by the service is one line, written under an exclusive
``flock``, flushed and fsynced before the write is acknowledged; a restart replays the log,
so nothing acknowledged is lost. Add records carry the encoded vectors, so replay and
compaction need no encoder. Several processes (uvicorn workers) share one log: each reads the
records appended since its last read (`UpdateLog.read_new`) before it answers a request.

A crash can leave a last line without its newline: that write was never acknowledged (the
acknowledgement follows the fsync of the whole line), so opening the log cuts it off. Any
other unreadable line is an error naming the file and line.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

LOG_FILE = "updates.log"
OPS = ("add", "delete")


class UpdateLogError(RuntimeError):
    """The update log is unreadable."""


class UpdateLog:
    """Appends records to, and reads them back from, ``directory/updates.log``."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOG_FILE
        self._offset = 0  # bytes of the log already read by this process
        self._line = 0  # lines already read (for error messages)
        self.path.touch(exist_ok=True)
        self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        with open(self.path, "rb+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                data = handle.read()
                if data and not data.endswith(b"\n"):
                    handle.truncate(data.rfind(b"\n") + 1)
                    os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, record: dict) -> None:
        """Write one record durably (returns after fsync)."""
        if record.get("op") not in OPS:
            raise ValueError(f"update record op must be one of {OPS}, got {record.get('op')!r}")
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
        with open(self.path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def has_new(self) -> bool:
        """Whether bytes were appended since the last `read_new` (one stat call)."""
        return os.stat(self.path).st_size > self._offset

    def read_new(self) -> list[dict]:
        """Records appended since the last call (all of them on the first), complete lines only."""
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        records = []
        for raw in complete.splitlines():
            self._line += 1
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise UpdateLogError(f"{self.path}, line {self._line}: not a JSON record ({error})") from error
            if not isinstance(record, dict) or record.get("op") not in OPS or not isinstance(record.get("id"), str):
                raise UpdateLogError(f"{self.path}, line {self._line}: a record needs op {OPS} and a string id")
            records.append(record)
        self._offset += len(complete)
        return records
