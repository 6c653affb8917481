"""The write-ahead log: every add and delete, durable before it is acknowledged.

Records live in ``wal/<first seq>.wal`` files; each record is::

    b"LSRW" | u32 payload length | u32 CRC32 of the payload | payload
    payload = u64 seq | u8 op | u32 header length | header (JSON: id, title, text)
              | u32 nnz | nnz x u32 term ids | nnz x f32 weights | u32 dim | dim x f32 dense

Sequence numbers count every record of the index from 1 without gaps; a commit says up to
which one its segments hold the records (``wal_seq``). A flush rolls the log to a new file
first, so the files before the newest hold only records a commit will cover; they are deleted
once that commit is durable (`WriteAheadLog.trim`).

Appends take ``locks/wal.lock`` (an ``flock``, so any process of a server may append in
turn), read what other processes appended since their last look, cut a torn or corrupt tail
(a record that fails its check with no valid record after it: an append that never finished,
so never acknowledged), write, and fsync before returning. Threads of one process share the
fsync (group commit): while one thread writes, the others queue, and the next write takes
the whole queue in one write and one fsync. A record that fails its check with a valid record
after it is damage, not a crash: `WalCorruptError` names the file and byte offset.

Readers tail the log without the lock; a record still being written looks incomplete and is
read on the next look.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lsr.index import storage

WAL_DIR = "wal"
LOCKS_DIR = "locks"
WAL_LOCK = "wal.lock"
MAGIC = b"LSRW"
FRAME = struct.Struct("<4sII")  # magic, payload length, crc32
HEAD = struct.Struct("<QBI")  # seq, op, header length
COUNT = struct.Struct("<I")
ADD, DELETE = 1, 2
OPS = {"add": ADD, "delete": DELETE}
OP_NAMES = {code: name for name, code in OPS.items()}
MAX_PAYLOAD = 1 << 30
FILE_PATTERN = re.compile(r"^(\d{16})\.wal$")


class WalCorruptError(RuntimeError):
    """A record before the end of the log fails its check."""


class WalGap(RuntimeError):
    """Records a reader has not seen were trimmed: a newer commit holds them."""


class WalRecord(NamedTuple):
    """One logged write. ``op`` is ``"add"`` (add or replace) or ``"delete"``. (A named tuple:
    a reader makes one per record on every refresh, and a frozen dataclass's constructor cost
    a few times more.)"""

    seq: int
    op: str
    doc_id: str
    title: str = ""
    text: str = ""
    terms: np.ndarray | None = None  # (nnz,) uint32
    weights: np.ndarray | None = None  # (nnz,) float32
    dense: np.ndarray | None = None  # (dim,) float32


def encode_body(op: str, doc_id: str, title: str = "", text: str = "", terms=None, weights=None,
                dense=None) -> bytes:
    """A record's payload after its seq (the seq is added when the record is appended).

    Raises:
        ValueError: an unknown op, or strings that are not valid Unicode (lone surrogates).
    """
    if op not in OPS:
        raise ValueError(f"write-ahead log op must be one of {tuple(OPS)}, got {op!r}")
    header = json.dumps({"id": doc_id, "title": title, "text": text}, ensure_ascii=False).encode("utf-8")
    terms = np.asarray(terms if terms is not None else [], dtype=np.uint32)
    weights = np.asarray(weights if weights is not None else [], dtype=np.float32)
    if terms.shape != weights.shape or terms.ndim != 1:
        raise ValueError(f"record for {doc_id!r}: {terms.size} terms but {weights.size} weights")
    dense = np.asarray(dense if dense is not None else [], dtype=np.float32).ravel()
    return b"".join((
        struct.pack("<BI", OPS[op], len(header)), header,
        COUNT.pack(len(terms)), terms.tobytes(), weights.tobytes(),
        COUNT.pack(len(dense)), dense.tobytes(),
    ))


def _frame(seq: int, body: bytes) -> bytes:
    seq_bytes = struct.pack("<Q", seq)
    crc = zlib.crc32(body, zlib.crc32(seq_bytes))
    return FRAME.pack(MAGIC, len(seq_bytes) + len(body), crc) + seq_bytes + body


def decode_payload(payload: bytes) -> WalRecord:
    """Parse a payload whose CRC matched; ValueError on a malformed one."""
    seq, op_code, header_length = HEAD.unpack_from(payload, 0)
    pos = HEAD.size + header_length
    header = _header(payload[HEAD.size : pos].decode("utf-8"))
    (nnz,) = COUNT.unpack_from(payload, pos)
    pos += COUNT.size
    (dim,) = COUNT.unpack_from(payload, pos + 8 * nnz)
    if pos + 8 * nnz + COUNT.size + 4 * dim != len(payload):
        raise ValueError("payload length does not match its contents")
    op = OP_NAMES.get(op_code)
    if op is None or type(header) is not dict:
        raise ValueError("unknown op or header")
    doc_id, title, text = header.get("id"), header.get("title"), header.get("text")
    if type(doc_id) is not str or type(title) is not str or type(text) is not str:
        raise ValueError("header fields id, title and text must be strings")
    terms = np.frombuffer(payload, dtype=np.uint32, count=nnz, offset=pos)
    weights = np.frombuffer(payload, dtype=np.float32, count=nnz, offset=pos + 4 * nnz)
    dense = np.frombuffer(payload, dtype=np.float32, count=dim, offset=pos + 8 * nnz + COUNT.size) if dim else None
    return WalRecord(seq, op, doc_id, title, text, terms, weights, dense)


_HEADER_DECODER = json.JSONDecoder()


def _header(text: str):
    """The JSON header of a record (`encode_body` writes it without spaces; the raw decoder
    skips ``json.loads``'s detection of the encoding, most of its cost for a small header)."""
    try:
        header, end = _HEADER_DECODER.raw_decode(text)
        if end == len(text):
            return header
    except ValueError:
        pass
    return json.loads(text)  # spaces around it, or not JSON: as json.loads judges


@dataclass
class _Scan:
    records: list[WalRecord]
    end: int  # offset after the last good record
    bad: int | None  # offset of a record that failed its check (None: the data ended cleanly or mid-record)


def _read_frame(data: bytes, offset: int):
    """The record at ``offset`` and the offset after it: ``(WalRecord, end)``, ``(None, offset)``
    if incomplete, or ``("bad", offset)``."""
    if len(data) - offset < FRAME.size:
        return None, offset
    magic, length, crc = FRAME.unpack_from(data, offset)
    if magic != MAGIC or length < HEAD.size or length > MAX_PAYLOAD:
        return "bad", offset
    start = offset + FRAME.size
    end = start + length
    if len(data) < end:
        return None, offset
    payload = data[start:end]
    if zlib.crc32(payload) != crc:
        return "bad", offset
    try:
        return decode_payload(payload), end
    except (ValueError, struct.error, UnicodeDecodeError):
        return "bad", offset


def _scan(data: bytes, offset: int) -> _Scan:
    records = []
    while True:
        frame, end = _read_frame(data, offset)
        if frame is None:
            return _Scan(records, offset, None)
        if frame == "bad":
            return _Scan(records, offset, offset)
        records.append(frame)
        offset = end


def _valid_record_after(data: bytes, offset: int) -> bool:
    """Whether a complete record with a good checksum starts anywhere after ``offset``."""
    position = data.find(MAGIC, offset + 1)
    while position >= 0:
        if isinstance(_read_frame(data, position)[0], WalRecord):
            return True
        position = data.find(MAGIC, position + 1)
    return False


def _read_from(path: Path | str, offset: int) -> bytes:
    """The file's bytes from ``offset`` to its end (raw calls: a buffered file object cost
    twice as much; a reader tails the newest file through `_TailFile` instead)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size - offset, offset) if size > offset else b""
    finally:
        os.close(fd)


class _TailFile:
    """The newest log file as a reader tails it: kept open between reads, so a refresh that
    finds new records costs one read call (opening, sizing and closing the file cost three
    more, each a few microseconds here, on every refresh). Thread-safe: a writer's flush
    reads the log from its own thread while searches refresh."""

    CHUNK = 1 << 16

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._path: Path | None = None
        self._fd: int | None = None

    def read(self, path: Path, offset: int) -> bytes:
        """The file's bytes from ``offset`` to its end (FileNotFoundError if it is gone)."""
        with self._mutex:
            if self._path != path:
                self._close()
                self._fd, self._path = os.open(path, os.O_RDONLY), path
            chunks = []
            while True:
                chunk = os.pread(self._fd, self.CHUNK, offset)
                chunks.append(chunk)
                if len(chunk) < self.CHUNK:
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
                offset += len(chunk)

    def close(self) -> None:
        with self._mutex:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._path = self._fd = None


def wal_files(directory: Path) -> list[tuple[int, Path]]:
    """``(first seq, path)`` of the log files of an index, oldest first."""
    try:
        entries = list((Path(directory) / WAL_DIR).iterdir())
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), p) for p in entries if (m := FILE_PATTERN.match(p.name))]
    return sorted(found)


def wal_file_name(first_seq: int) -> str:
    return f"{first_seq:016d}.wal"


class WriteAheadLog:
    """The log of one index directory, as one process sees it (thread-safe).

    Args:
        directory: the index directory (``wal/`` and ``locks/`` are inside it).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.wal_dir = self.directory / WAL_DIR
        self._wal_dir_name = os.fspath(self.wal_dir)  # for the stat of every refresh
        self._lock_handle = open(self.directory / LOCKS_DIR / WAL_LOCK, "a+b")
        self._mutex = threading.Lock()  # flock is per open file: threads of this process take this first
        self._append_state: tuple[int, int, int] | None = None  # (file first seq, validated end, last seq)
        self._read_cursor: tuple[int, int, int] | None = None  # (file first seq, offset read to, last seq read)
        self._read_watch, self._append_watch = storage.ChangeWatch(), storage.ChangeWatch()
        self._tail = _TailFile()
        self._listings: dict[storage.ChangeWatch, list] = {}  # each watch's last listing
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._writing = False

    def close(self) -> None:
        self._lock_handle.close()
        self._tail.close()

    # appending

    def append(self, bodies: list[bytes]) -> list[int]:
        """Append records (`encode_body` payloads) durably; returns their sequence numbers.

        Returns once the records are fsynced. Concurrent callers share writes and fsyncs.
        """
        ticket = _Ticket(bodies)
        with self._cond:
            self._queue.append(ticket)
            while ticket.seqs is None and ticket.error is None and self._writing:
                self._cond.wait()
            leader = ticket.seqs is None and ticket.error is None
            if leader:
                self._writing = True
        if leader:
            self._write_queue()
        if ticket.error is not None:
            raise ticket.error
        return ticket.seqs

    def _write_queue(self) -> None:
        while True:
            with self._cond:
                batch, self._queue = self._queue, []
                if not batch:
                    self._writing = False
                    self._cond.notify_all()
                    return
            try:
                seqs = self._write_batch([body for ticket in batch for body in ticket.bodies])
                for ticket in batch:
                    ticket.seqs, seqs = seqs[: len(ticket.bodies)], seqs[len(ticket.bodies) :]
            except BaseException as error:  # every waiter of the batch gets the failure
                for ticket in batch:
                    ticket.error = error
            with self._cond:
                self._cond.notify_all()

    def _write_batch(self, bodies: list[bytes]) -> list[int]:
        with self._locked():
            first_seq, end, last_seq = self._catch_up()
            frames = [_frame(last_seq + 1 + i, body) for i, body in enumerate(bodies)]
            path = self.wal_dir / wal_file_name(first_seq)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.lseek(fd, end, os.SEEK_SET)
                data = b"".join(frames)
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                storage.fsync_fd(fd, path)
            except BaseException:
                self._append_state = None  # re-validate from disk next time
                raise
            finally:
                os.close(fd)
            self._append_state = (first_seq, end + len(data), last_seq + len(bodies))
            return list(range(last_seq + 1, last_seq + 1 + len(bodies)))

    def _locked(self):
        return _FileLock(self._mutex, self._lock_handle)

    def _files(self, watch: storage.ChangeWatch) -> list[tuple[int, Path]]:
        """The log's files, listed again only when the directory may have changed (``watch``:
        one per caller, so that each notices every change)."""
        cached = self._listings.get(watch)
        if cached is None or watch.changed(self._wal_dir_name):
            cached = wal_files(self.directory)
            self._listings[watch] = cached
            if watch is self._read_watch:
                self._tail.close()  # a file may have been replaced under its name: open it again
        return cached

    def _catch_up(self) -> tuple[int, int, int]:
        """Under the lock: the current file, the end of its valid records and the last seq,
        cutting a torn or corrupt tail."""
        files = self._files(self._append_watch)
        if not files:
            raise WalCorruptError(f"{self.wal_dir}: the write-ahead log has no file")
        first_seq, path = files[-1]
        state = self._append_state
        start, last_seq = (state[1], state[2]) if state and state[0] == first_seq else (0, first_seq - 1)
        data = _read_from(path, start)
        scan = _scan(data, 0)
        for record in scan.records:
            if record.seq != last_seq + 1:
                raise WalCorruptError(f"{path}: record at seq {record.seq} follows seq {last_seq}")
            last_seq = record.seq
        if scan.end < len(data):
            if scan.bad is not None and _valid_record_after(data, scan.bad):
                raise WalCorruptError(f"{path}: record at byte {start + scan.bad} is damaged (a valid record follows)")
            fd = os.open(path, os.O_WRONLY)
            try:
                storage.truncate(fd, path, start + scan.end)
            finally:
                os.close(fd)
        self._append_state = (first_seq, start + scan.end, last_seq)
        return self._append_state

    def roll(self) -> int:
        """Start a new log file for the appends that follow; returns the last seq before it.

        The files before the new one then hold exactly the records up to that seq.
        """
        with self._locked():
            first_seq, end, last_seq = self._catch_up()
            if last_seq >= first_seq:  # the current file holds records: start a new one
                create_wal_file(self.directory, last_seq + 1)
                self._append_state = (last_seq + 1, 0, last_seq)
            return last_seq

    def last_seq(self) -> int:
        """The seq of the last complete record (under the lock)."""
        with self._locked():
            return self._catch_up()[2]

    def trim(self, upto_seq: int) -> None:
        """Remove the files whose records are all at or below ``upto_seq`` (a durable commit holds them)."""
        files = wal_files(self.directory)
        for (_, path), (next_first, _) in zip(files, files[1:]):
            if next_first <= upto_seq + 1:
                storage.remove(path)

    # reading

    def read(self, after_seq: int) -> list[WalRecord]:
        """Complete records with seq > ``after_seq``, in order (lock-free; see the module docstring).

        Raises:
            WalGap: the next record the caller needs was trimmed (reload the commit).
            WalCorruptError: a damaged record with valid records after it, or a gap in the seqs.
        """
        files = self._files(self._read_watch)
        # The file holding after_seq + 1 is the last one starting at or before it.
        start = max((i for i, (first, _) in enumerate(files) if first <= after_seq + 1), default=None)
        if start is None:
            if files:
                raise WalGap(f"records after seq {after_seq} were trimmed")
            return []
        records, expected = [], after_seq + 1
        for first, path in files[start:]:
            cursor = self._read_cursor
            offset = cursor[1] if cursor and cursor[0] == first and cursor[2] == expected - 1 else 0
            try:
                data = self._tail.read(path, offset) if path == files[-1][1] else _read_from(path, offset)
            except FileNotFoundError as error:
                raise WalGap(f"{path} was trimmed while being read") from error
            scan = _scan(data, 0)
            if scan.bad is not None:
                scan = self._recheck(path, offset, scan)
            for record in scan.records:
                if record.seq < expected:
                    continue
                if record.seq != expected:
                    raise WalCorruptError(f"{path}: record at seq {record.seq}, expected {expected}")
                records.append(record)
                expected += 1
            self._read_cursor = (first, offset + scan.end, expected - 1)
        return records

    def _recheck(self, path: Path, offset: int, scan: _Scan) -> _Scan:
        """A record failed its check while reading without the lock: look again under it, where
        no append is half-written. A damaged record with valid ones after it is an error;
        otherwise it is a torn tail, and the records before it stand."""
        with self._locked():
            try:
                data = _read_from(path, offset)
            except FileNotFoundError as error:
                raise WalGap(f"{path} was trimmed while being read") from error
        scan = _scan(data, 0)
        if scan.bad is not None and _valid_record_after(data, scan.bad):
            raise WalCorruptError(f"{path}: record at byte {offset + scan.bad} is damaged (a valid record follows)")
        return scan

    def check(self) -> list[str]:
        """Problems of every log file (for ``lsr index verify``): damage before the tail, seq gaps."""
        problems, expected = [], None
        for first, path in wal_files(self.directory):
            data = path.read_bytes()
            scan = _scan(data, 0)
            if scan.bad is not None and _valid_record_after(data, scan.bad):
                problems.append(f"{path}: record at byte {scan.bad} is damaged (a valid record follows)")
            for record in scan.records:
                if expected is not None and record.seq != expected and record.seq != first:
                    problems.append(f"{path}: record at seq {record.seq}, expected {expected}")
                expected = record.seq + 1
        return problems


def create_wal_file(directory: Path, first_seq: int) -> Path:
    """Create an empty log file durably (file, then its directory)."""
    path = Path(directory) / WAL_DIR / wal_file_name(first_seq)
    with open(path, "ab") as handle:
        storage.fsync_fd(handle.fileno(), path)
    storage.fsync_dir(path.parent)
    return path


class _Ticket:
    """A caller's records waiting in the group-commit queue."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.seqs: list[int] | None = None
        self.error: BaseException | None = None


class _FileLock:
    """The process mutex, then the cross-process ``flock``."""

    def __init__(self, mutex: threading.Lock, handle) -> None:
        self.mutex, self.handle = mutex, handle

    def __enter__(self):
        self.mutex.acquire()
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        except BaseException:
            self.mutex.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        finally:
            self.mutex.release()
