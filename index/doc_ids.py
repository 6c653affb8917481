"""External document ids: hashing, lookup by id, duplicate detection.

A segment stores its ids as a string table in internal order and, beside it, the 64-bit
FNV-1a hash of every id sorted (``doc_id_hashes``) with the internal id each belongs to
(``doc_id_hash_docs``): finding a document by id is a binary search plus one string compare,
without a dictionary of every id in memory. Equal hashes of different ids are resolved by
comparing the strings.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit
from numba.typed import List

from lsr.index.postings_view import find_sorted, readonly

# kernels


@njit(cache=True, nogil=True)
def _fnv1a(data, start, end):
    h = np.uint64(0xCBF29CE484222325)
    for p in range(start, end):
        h = (h ^ np.uint64(data[p])) * np.uint64(0x100000001B3)
    return h


@njit(cache=True, nogil=True)
def _hash_table(offsets, data, out):
    for i in range(offsets.shape[0] - 1):
        out[i] = _fnv1a(data, offsets[i], offsets[i + 1])


@njit(cache=True, nogil=True)
def _first_position(table, h):
    """The first position of hash ``h`` in the sorted ``table`` (binary search), or -1."""
    low = find_sorted(table, 0, table.shape[0], h)
    return low if low < table.shape[0] and table[low] == h else -1


@njit(cache=True, nogil=True)
def _hash_matches(table, hashes, out_query, out_position):
    """For each hash present in the sorted ``table``: its index and the first table position
    holding it. Returns how many were found."""
    found = 0
    for i in range(hashes.shape[0]):
        position = _first_position(table, hashes[i])
        if position >= 0:
            out_query[found], out_position[found] = i, position
            found += 1
    return found


@njit(cache=True, nogil=True)
def _hash_matches_in(tables, hashes, out_table, out_query, out_position):
    """`_hash_matches` over several sorted tables (a typed list) in one call: for each (table,
    hash) match, the table's index too. Returns how many were found."""
    found = 0
    for s in range(len(tables)):
        table = tables[s]
        for i in range(hashes.shape[0]):
            position = _first_position(table, hashes[i])
            if position >= 0:
                out_table[found], out_query[found], out_position[found] = s, i, position
                found += 1
    return found


# wrappers


class DuplicateIdError(ValueError):
    """Two documents of one build have the same external id."""

    def __init__(self, doc_id: str, where: str = "") -> None:
        super().__init__(f"duplicate document id {doc_id!r}{where}: ids must be unique "
                         f"(or pass duplicates='last' to keep the last document of each id)")
        self.doc_id = doc_id


def hash_id(doc_id: str) -> np.uint64:
    """FNV-1a (64-bit) of the id's UTF-8 bytes (a numpy uint64: a Python int above 2^63 would
    make numpy compare the whole hash table as floats)."""
    data = np.frombuffer(doc_id.encode("utf-8"), dtype=np.uint8)
    return np.uint64(_fnv1a(data, 0, data.shape[0]))


def hash_ids(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """FNV-1a of every string of a string table (``offsets`` int64, ``data`` uint8)."""
    out = np.empty(len(offsets) - 1, dtype=np.uint64)
    if len(out):
        _hash_table(np.asarray(offsets, dtype=np.int64), np.asarray(data, dtype=np.uint8), out)
    return out


def sorted_hash_table(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted hashes and the position each came from (uint32), ties by position."""
    order = np.argsort(hashes, kind="stable").astype(np.uint32)
    return hashes[order], order


def find_id(segment, doc_id: str) -> int | None:
    """The internal id of ``doc_id`` in ``segment`` (an `index.format.Segment`), or None."""
    found = find_ids(segment, [doc_id], np.array([hash_id(doc_id)], dtype=np.uint64))
    return found[0][1] if found else None


def find_ids(segment, doc_ids: list[str], hashes: np.ndarray) -> list[tuple[int, int]]:
    """`find_id` for many ids at once (``hashes``: their `hash_id` values): ``(position in
    doc_ids, internal id)`` for each id the segment holds. One compiled binary search per id; strings
    are compared only where a hash matches."""
    table = segment.doc_id_hashes
    if not len(doc_ids) or not len(table):
        return []
    hashes = np.asarray(hashes, dtype=np.uint64)
    # One compiled pass: a refresh looks up each new id in every segment, mostly to find
    # nothing, and numpy's per-call overhead per segment was most of its cost.
    queries, positions = np.empty(len(hashes), dtype=np.int64), np.empty(len(hashes), dtype=np.int64)
    count = _hash_matches(table, hashes, queries, positions)
    return [(i, doc) for i, position in zip(queries[:count].tolist(), positions[:count].tolist())
            if (doc := _confirmed(segment, position, hashes[i], doc_ids[i])) is not None]


class IdTables:
    """The sorted id hashes of several segments, searched in one compiled call (`find`): a
    refresh looks up every newly written id in every segment, and a call per segment cost
    more than the searches."""

    def __init__(self, segments: list) -> None:
        self.segments = segments
        self._tables = List()
        for segment in segments:
            self._tables.append(readonly(np.ascontiguousarray(segment.doc_id_hashes, dtype=np.uint64)))
        self._found = np.empty((3, 0), dtype=np.int64)  # scratch: table, query, position per match
        self._mutex = threading.Lock()

    def find(self, doc_ids: list[str], hashes: np.ndarray) -> list[tuple[int, int, int]]:
        """``(segment index, position in doc_ids, internal id)`` for each segment copy of an id."""
        if not len(doc_ids) or not self.segments:
            return []
        hashes = np.asarray(hashes, dtype=np.uint64)
        with self._mutex:  # the scratch arrays are reused (a refresh finds a few new ids, mostly in no segment)
            size = len(self.segments) * len(hashes)
            if self._found.shape[1] < size:
                self._found = np.empty((3, 2 * size), dtype=np.int64)
            tables, queries, positions = self._found
            count = _hash_matches_in(self._tables, hashes, tables, queries, positions)
            if not count:
                return []
            tables, queries, positions = tables[:count].tolist(), queries[:count].tolist(), positions[:count].tolist()
        found = []
        for s, i, position in zip(tables, queries, positions):
            if (doc := _confirmed(self.segments[s], position, hashes[i], doc_ids[i])) is not None:
                found.append((s, i, doc))
        return found


def _confirmed(segment, position: int, h: np.uint64, doc_id: str) -> int | None:
    """The internal id of ``doc_id`` among the table entries of hash ``h`` from ``position``
    (equal hashes of different ids are told apart by the strings), or None."""
    table = segment.doc_id_hashes
    while position < len(table) and table[position] == h:
        doc = int(segment.doc_id_hash_docs[position])
        if segment.doc_ids[doc] == doc_id:
            return doc
        position += 1
    return None


def duplicate_positions(offsets: np.ndarray, data: np.ndarray, hashes: np.ndarray | None = None):
    """Positions of a string table whose string appeared at an earlier position.

    Returns:
        ``(later, first)``: int64 arrays, ``later[i]`` repeats the string at ``first[i]`` (the
        earliest position of that string); empty when every string is unique.
    """
    hashes = hash_ids(offsets, data) if hashes is None else hashes
    sorted_hashes, order = sorted_hash_table(hashes)
    same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
    later, first = [], []
    if len(same):
        in_run = np.zeros(len(hashes), dtype=bool)
        in_run[same] = in_run[same + 1] = True
        members = np.flatnonzero(in_run)
        # Runs of equal hashes; inside one, positions ascend (stable sort), so the first
        # occurrence of a string is met first.
        for run in np.split(members, np.flatnonzero(np.diff(sorted_hashes[members]) != 0) + 1):
            seen: dict[bytes, int] = {}
            for position in order[run].tolist():
                text = bytes(data[offsets[position] : offsets[position + 1]])
                if text in seen:
                    later.append(position)
                    first.append(seen[text])
                else:
                    seen[text] = position
    return np.array(later, dtype=np.int64), np.array(first, dtype=np.int64)
