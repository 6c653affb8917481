"""Commit points: the numbered files that say which segments make up an index.

An index directory holds immutable segments (``segments/<name>/``), per-segment delete files
(``deletes/``), the write-ahead log (``wal/``) and commit files ``commit-<generation>.json``.
A commit names the live segments in search order, with the checksum of each segment's
``meta.json`` (which checksums every other file of the segment), the delete file of each
segment that has deletions (with its checksum and count), the last write-ahead log record it
covers (``wal_seq``: records up to it are in the segments), the index-wide settings, and the
counter that names new segments. The file ends with a line ``crc32 XXXXXXXX`` over everything
before it.

A commit is written under a temporary name, fsynced, renamed into place and its directory
fsynced (``index.storage.write_atomic``): a commit file either exists whole or not at all.
Readers open the newest generation; a damaged newest commit is an error, never a silent fall
back to an older one (that could lose writes whose log was trimmed after it).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lsr.index import storage
from lsr.index.format import IndexFormatError

INDEX_FORMAT = "lsr-index"
INDEX_FORMAT_VERSION = 3
COMMIT_PATTERN = re.compile(r"^commit-(\d{10})\.json$")
SEGMENT_NAME = re.compile(r"^s\d{6,}-[0-9a-f]{8}$")
DELETES_NAME = re.compile(r"^deletes/s\d{6,}-[0-9a-f]{8}\.\d+\.del$")
SEGMENTS_DIR = "segments"
DELETES_DIR = "deletes"


@dataclass(frozen=True)
class SegmentRecord:
    """One segment of a commit.

    Attributes:
        name: the directory under ``segments/``.
        num_docs: documents in the segment, deleted ones included.
        meta: checksum record (``bytes``, ``crc32``) of the segment's ``meta.json``.
        deletes: ``{"file", "bytes", "crc32", "count"}`` of its delete file, or None.
    """

    name: str
    num_docs: int
    meta: dict
    deletes: dict | None = None

    @property
    def num_deleted(self) -> int:
        return int(self.deletes["count"]) if self.deletes else 0

    @property
    def num_live(self) -> int:
        return self.num_docs - self.num_deleted


@dataclass(frozen=True)
class Commit:
    """The content of one commit file (see the module docstring)."""

    generation: int
    segments: tuple[SegmentRecord, ...]
    wal_seq: int
    next_segment: int
    settings: dict = field(default_factory=dict)

    @property
    def num_docs(self) -> int:
        """Live documents in the segments."""
        return sum(s.num_live for s in self.segments)

    def segment(self, name: str) -> SegmentRecord:
        for record in self.segments:
            if record.name == name:
                return record
        raise KeyError(name)

    def successor(self, **changes) -> "Commit":
        """The next generation with ``changes`` applied."""
        return replace(self, **{"generation": self.generation + 1, **changes})

    def files(self) -> set[str]:
        """Paths (relative to the index directory) this commit needs, its own file included."""
        needed = {commit_file_name(self.generation)}
        for record in self.segments:
            needed.add(f"{SEGMENTS_DIR}/{record.name}")
            if record.deletes:
                needed.add(record.deletes["file"])
        return needed


def commit_file_name(generation: int) -> str:
    return f"commit-{generation:010d}.json"


def encode_commit(commit: Commit) -> bytes:
    body = {"format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, **asdict(commit)}
    data = json.dumps(body, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    return data + f"crc32 {zlib.crc32(data):08x}\n".encode("ascii")


def decode_commit(data: bytes, path: Path) -> Commit:
    """Parse and check a commit file's bytes; `IndexFormatError` names the file on any damage."""
    body, _, footer = data.rstrip(b"\n").rpartition(b"\n")
    body += b"\n"
    match = re.fullmatch(rb"crc32 ([0-9a-f]{8})", footer)
    if not match or int(match.group(1), 16) != zlib.crc32(body):
        raise IndexFormatError(f"{path}: checksum footer missing or wrong (the commit file is damaged)")
    try:
        raw = json.loads(body)
        if raw.pop("format") != INDEX_FORMAT:
            raise ValueError("not an lsr index commit")
        if raw.pop("format_version") != INDEX_FORMAT_VERSION:
            raise ValueError(f"index format version is not {INDEX_FORMAT_VERSION}")
        segments = tuple(SegmentRecord(**s) for s in raw.pop("segments"))
        commit = Commit(segments=segments, **raw)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise IndexFormatError(f"{path}: not a valid commit ({error})") from error
    if problem := _type_problem(commit):
        raise IndexFormatError(f"{path}: not a valid commit ({problem})")
    if commit.generation != generation_of(path.name):
        raise IndexFormatError(f"{path}: holds generation {commit.generation}")
    return commit


def _type_problem(commit: Commit) -> str | None:
    """What is wrong with the fields' types and names (paths must stay inside the index)."""
    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not all(count(v) for v in (commit.generation, commit.wal_seq, commit.next_segment)):
        return "generation, wal_seq and next_segment must be non-negative integers"
    if not isinstance(commit.settings, dict):
        return "settings must be an object"
    for record in commit.segments:
        if not isinstance(record.name, str) or not SEGMENT_NAME.match(record.name) or not count(record.num_docs):
            return f"segment {record.name!r}: bad name or document count"
        if not isinstance(record.meta, dict):
            return f"segment {record.name}: bad meta.json record"
        deletes = record.deletes
        if deletes is not None and not (isinstance(deletes, dict) and isinstance(deletes.get("file"), str)
                                        and DELETES_NAME.match(deletes["file"]) and count(deletes.get("count"))
                                        and deletes["count"] <= record.num_docs):
            return f"segment {record.name}: bad delete file record"
    if len({record.name for record in commit.segments}) != len(commit.segments):
        return "a segment is listed twice"
    return None


def generation_of(name: str) -> int | None:
    match = COMMIT_PATTERN.match(name)
    return int(match.group(1)) if match else None


def generations(directory: Path) -> list[int]:
    """Generations of the commit files in ``directory``, ascending."""
    try:
        names = [entry.name for entry in Path(directory).iterdir()]
    except FileNotFoundError:
        return []
    return sorted(g for g in map(generation_of, names) if g is not None)


def read_commit(directory: Path, generation: int) -> Commit:
    path = Path(directory) / commit_file_name(generation)
    return decode_commit(path.read_bytes(), path)


def read_newest_commit(directory: Path) -> Commit:
    """The newest commit of an index directory.

    Raises:
        IndexFormatError: no commit (not an index, an index of an older format, or a first
            build that never finished), or the newest commit is damaged.
    """
    directory = Path(directory)
    found = generations(directory)
    if not found:
        raise IndexFormatError(_no_commit_message(directory))
    return read_commit(directory, found[-1])


def write_commit(directory: Path, commit: Commit) -> None:
    """Write a commit durably (temporary file, fsync, rename, directory fsync)."""
    storage.write_atomic(Path(directory) / commit_file_name(commit.generation), encode_commit(commit))


def _no_commit_message(directory: Path) -> str:
    if (directory / "meta.json").is_file():
        try:
            old = json.loads((directory / "meta.json").read_text())
        except (OSError, ValueError):
            old = {}
        if isinstance(old, dict) and old.get("format") == INDEX_FORMAT:
            return (f"{directory} is an index of format version {old.get('format_version')} (one directory without "
                    f"segments); this version reads format {INDEX_FORMAT_VERSION} (segments and commit points). "
                    f"Convert it with `lsr index upgrade {directory}`, or rebuild it into a new directory with "
                    f"`lsr index CORPUS --out NEW_DIR`")
    if not directory.is_dir():
        return f"{directory} does not exist"
    return f"{directory} is not an index: it has no commit file (commit-*.json); build one with `lsr index`"
