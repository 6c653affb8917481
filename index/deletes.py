"""Per-segment deleted-document bitsets (Lucene's liveDocs, inverted).

A segment never changes; deleting one of its documents writes a new delete file for it,
``deletes/<segment>.<generation>.del``: one bit per document (1 = deleted), packed
little-endian, named by the commit that introduces it. The commit records the file's size,
CRC32 and the number of deleted documents, all checked when it is read. Scorers receive the
inverse, a ``uint8`` live mask (1 = live), and skip deleted documents inside their kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index import storage
from lsr.index.commit import DELETES_DIR
from lsr.index.format import IndexFormatError, describe_file, read_checked


def deletes_file_name(segment: str, generation: int) -> str:
    return f"{DELETES_DIR}/{segment}.{generation}.del"


def write_deletes(directory: Path, segment: str, generation: int, deleted: np.ndarray) -> dict:
    """Write a segment's delete file durably; returns its commit record."""
    relative = deletes_file_name(segment, generation)
    path = Path(directory) / relative
    storage.make_dir(path.parent)
    storage.write_atomic(path, np.packbits(np.asarray(deleted, dtype=bool), bitorder="little").tobytes())
    return {"file": relative, **describe_file(path), "count": int(np.count_nonzero(deleted))}


def read_deletes(directory: Path, record: dict | None, num_docs: int) -> np.ndarray:
    """A segment's deleted mask (bool, ``num_docs``), checked against its commit record."""
    if record is None:
        return np.zeros(num_docs, dtype=bool)
    path = Path(directory) / record["file"]
    data, problem = read_checked(path, record)  # the bytes checked are the bytes decoded: one read
    if problem:
        raise IndexFormatError(problem)
    bits = np.frombuffer(data, dtype=np.uint8)
    if len(bits) != (num_docs + 7) // 8:
        raise IndexFormatError(f"{path}: {len(bits)} bytes for {num_docs} documents")
    deleted = np.unpackbits(bits, bitorder="little", count=num_docs).astype(bool)
    if np.count_nonzero(deleted) != record["count"]:
        raise IndexFormatError(f"{path}: {np.count_nonzero(deleted)} deletions, the commit says {record['count']}")
    return deleted
