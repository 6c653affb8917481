"""`lsr index verify`: every checksum and structure check of an index directory, reported."""

from __future__ import annotations

from pathlib import Path

from lsr.index.commit import SEGMENTS_DIR, generations, read_commit
from lsr.index.deletes import read_deletes
from lsr.index.format import IndexFormatError, Segment, read_segment_meta, verify_segment_files
from lsr.index.wal import WriteAheadLog


def verify_index(directory: str | Path) -> tuple[list[str], dict]:
    """Check every commit file, every file of every segment a commit names (CRC32 and
    structure), every delete file and the write-ahead log.

    Returns:
        The problems found (one line each; empty when the index is intact) and counts of
        what was checked.
    """
    directory = Path(directory)
    problems: list[str] = []
    checked = {"commits": 0, "segments": 0, "files": 0, "delete_files": 0}
    found = generations(directory)
    if not found:
        try:
            from lsr.index.commit import read_newest_commit

            read_newest_commit(directory)
        except IndexFormatError as error:
            return [str(error)], checked
    seen_segments: set[str] = set()
    for generation in found:
        try:
            commit = read_commit(directory, generation)
        except (IndexFormatError, OSError) as error:
            problems.append(str(error))
            continue
        checked["commits"] += 1
        for record in commit.segments:
            if record.name not in seen_segments:
                seen_segments.add(record.name)
                problems += _check_segment(directory / SEGMENTS_DIR / record.name, record, checked)
            if record.deletes:
                checked["delete_files"] += 1
                try:
                    read_deletes(directory, record.deletes, record.num_docs)
                except IndexFormatError as error:
                    problems.append(str(error))
    wal = WriteAheadLog(directory)
    try:
        problems += wal.check()
    finally:
        wal.close()
    return problems, checked


def _check_segment(path: Path, record, checked: dict) -> list[str]:
    checked["segments"] += 1
    try:
        meta = read_segment_meta(path, record.meta)
    except (IndexFormatError, OSError) as error:
        return [str(error)]
    if meta.get("num_docs") != record.num_docs:
        return [f"{path}/meta.json: {meta.get('num_docs')} documents, the commit says {record.num_docs}"]
    problems = verify_segment_files(path, meta)
    checked["files"] += 1 + len(meta.get("arrays", {})) + len(meta.get("files") or {})
    if problems:
        return problems
    try:
        Segment.open(path, record.meta, verify=False)  # structure (the checksums passed above)
    except (IndexFormatError, OSError, ValueError) as error:
        return [str(error)]
    return []
