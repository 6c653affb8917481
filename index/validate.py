"""Cheap structure checks of an opened segment, so that no kernel ever reads out of bounds.

The scorers' kernels trust their arrays (no bounds checks on the hot path). Opening a segment
therefore checks, in one pass over its entries and postings, every fact a kernel relies on:
array lengths agree with each other and with ``meta.json``, offsets start at 0, never
decrease and end at the array they index, block and term ids are in range and sorted where
the kernels binary-search them, doc ids and offsets stay inside their chunk, block and the
segment, a term's entries are the blocks of its postings, an entry's recorded maximum is its
largest impact, and both copies of the postings hold the same
entries per block. A violation is an `IndexFormatError` naming the file. The checksums
(``index.format.verify_segment_files``) catch the damage these checks cannot see (a changed
impact inside its range); these catch, in an index opened without checksums, all damage that
could crash the process.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lsr.index.bmp_build import MAX_BLOCK_SIZE, SEED_KS
from lsr.index.format import CHUNK_BITS, CHUNK_MASK, IndexFormatError, chunk_count
from lsr.index.postings_view import block_view, chunk_postings, term_view

# kernels


@njit(cache=True, nogil=True)
def _close_entry(view, x, largest):
    """Whether entry ``x`` ends sound: its recorded maximum is its largest impact, above 0."""
    return largest == view.entry_max[x] and largest > 0


@njit(cache=True, nogil=True)
def _check_term_view(view, num_docs, entries_per_block):
    """0 when sound, else ``code * 2^40 + position``: 1 entry (block id or count), 2 posting
    (doc id), 3 entry max. A term's postings, chunk by chunk, must have increasing doc ids
    inside the segment, and its entries must be exactly the blocks those docs fall in, each
    with its largest impact. (The chunk starts are checked as offsets before this runs.)"""
    for t in range(view.entry_offsets.shape[0] - 1):
        x, x_end = view.entry_offsets[t], view.entry_offsets[t + 1]
        current = -1  # block of entry x, once a posting opened it
        largest = 0
        last_doc = -1
        for c in range(view.chunks):
            start, end = chunk_postings(view, t, c)
            for p in range(start, end):
                low = np.int64(view.post_docs[p])
                doc = (c << CHUNK_BITS) + low
                if low < 0 or low > CHUNK_MASK or doc <= last_doc or doc >= num_docs:
                    return 2 * 2**40 + p
                last_doc = doc
                blk = doc // view.block_size
                if blk != current:
                    if current >= 0:
                        if not _close_entry(view, x, largest):
                            return 3 * 2**40 + x
                        x += 1
                    if x >= x_end or np.int64(view.entry_blocks[x]) != blk:
                        return 1 * 2**40 + x
                    entries_per_block[blk] += 1
                    current = blk
                    largest = 0
                largest = max(largest, np.int64(view.post_impacts[p]))
        if current >= 0:
            if not _close_entry(view, x, largest):
                return 3 * 2**40 + x
            x += 1
        if x != x_end:
            return 1 * 2**40 + x
    return 0


@njit(cache=True, nogil=True)
def _check_forward_view(view, vocab_size, num_docs, entries_per_block):
    """0 when sound, else ``code * 2^40 + position``: 1 term, 2 entry start, 3 doc offset, 4 entry count."""
    for blk in range(view.term_offsets.shape[0] - 1):
        lo, hi = view.term_offsets[blk], view.term_offsets[blk + 1]
        if hi - lo != entries_per_block[blk]:
            return 4 * 2**40 + blk
        length = view.post_offsets[blk + 1] - view.post_offsets[blk]
        last_term = -1
        last_start = -1
        for e in range(lo, hi):
            term = np.int64(view.terms[e])
            if term >= vocab_size or term <= last_term:
                return 1 * 2**40 + e
            last_term = term
            start = np.int64(view.entry_starts[e])
            if (e == lo and start != 0) or start <= last_start or start >= length:
                return 2 * 2**40 + e
            last_start = start
        if hi == lo and length != 0:
            return 2 * 2**40 + lo
        for p in range(view.post_offsets[blk], view.post_offsets[blk + 1]):
            doc = np.int64(view.post_docs[p])
            if doc >= view.block_size or blk * view.block_size + doc >= num_docs:
                return 3 * 2**40 + p
    return 0


# wrappers


def validate_segment(segment) -> None:
    """Check an opened `index.format.Segment`; raises `IndexFormatError` naming the file."""
    meta, b, where = segment.meta, segment.postings, segment.path
    vocab, num_docs, block_size = _positive(meta, "vocab_size", where), _count(meta, "num_docs", where), b.block_size
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise IndexFormatError(f"{where}/meta.json: block_size {block_size} is not in [1, {MAX_BLOCK_SIZE}]")
    num_blocks = max((num_docs + block_size - 1) // block_size, 1)
    _length(segment.term_scales, vocab, where, "term_scales")
    if not np.all(np.isfinite(segment.term_scales) & (segment.term_scales > 0)):
        raise IndexFormatError(f"{where}/term_scales.npy: scales must be finite and positive")
    for table, name in ((segment.doc_ids, "doc_id"), (segment.doc_titles, "doc_title"), (segment.doc_texts, "doc_text")):
        if table is not None:
            _offsets(table.offsets, num_docs + 1, len(table.data), where, f"{name}_offsets")
    _check_id_hashes(segment, num_docs, where)
    num_entries, num_postings = len(b.term_entry_blocks), len(b.term_post_docs)
    _offsets(b.term_entry_offsets, vocab + 1, num_entries, where, "term_entry_offsets")
    _length(b.term_entry_max, num_entries, where, "term_entry_max")
    _offsets(b.term_chunk_starts, vocab * chunk_count(num_blocks * block_size) + 1, num_postings, where,
             "term_chunk_starts")
    _length(b.term_post_impacts, num_postings, where, "term_post_impacts")
    _offsets(b.block_term_offsets, num_blocks + 1, num_entries, where, "block_term_offsets")
    _length(b.block_terms, num_entries, where, "block_terms")
    _length(b.block_entry_starts, num_entries, where, "block_entry_starts")
    _offsets(b.block_post_offsets, num_blocks + 1, num_postings, where, "block_post_offsets")
    _length(b.block_post_docs, num_postings, where, "block_post_docs")
    _length(b.block_post_impacts, num_postings, where, "block_post_impacts")
    if b.block_post_impacts16 is not None:
        _length(b.block_post_impacts16, num_postings, where, "block_post_impacts16")
    _check_block_maxima(b, vocab, num_blocks, where)
    if b.term_kth_impacts.shape != (vocab, len(SEED_KS)):
        raise IndexFormatError(f"{where}/term_kth_impacts.npy: shape {b.term_kth_impacts.shape}, "
                               f"expected {(vocab, len(SEED_KS))}")
    per_block = np.zeros(num_blocks, dtype=np.int64)
    code = _check_term_view(term_view(b), num_docs, per_block)
    _raise(code, where, {1: ("term_entry_blocks", "entry", "not the block of its term's next postings"),
                         2: ("term_post_docs", "posting", "doc id outside the segment or not increasing"),
                         3: ("term_entry_max", "entry", "not the largest impact of the entry")})
    code = _check_forward_view(block_view(b), vocab, num_docs, per_block)
    _raise(code, where, {1: ("block_terms", "entry", "term id out of range or not increasing"),
                         2: ("block_entry_starts", "entry", "start outside its block or not increasing"),
                         3: ("block_post_docs", "posting", "doc offset outside its block"),
                         4: ("block_term_offsets", "block", "entries differ from the term view's")})


def _raise(code: int, where, meanings: dict) -> None:
    if code:
        name, unit, problem = meanings[code >> 40]
        raise IndexFormatError(f"{where}/{name}.npy: {unit} {code & (2**40 - 1)}: {problem}")


def _positive(meta: dict, key: str, where) -> int:
    value = _count(meta, key, where)
    if value < 1:
        raise IndexFormatError(f"{where}/meta.json: {key} must be positive, got {value}")
    return value


def _count(meta: dict, key: str, where) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IndexFormatError(f"{where}/meta.json: {key} must be a non-negative integer, got {value!r}")
    return value


def _length(array: np.ndarray, expected: int, where, name: str) -> None:
    if array.ndim != 1 or len(array) != expected:
        raise IndexFormatError(f"{where}/{name}.npy: {array.shape} values, expected {expected}")


def _offsets(offsets: np.ndarray, length: int, end: int, where, name: str) -> None:
    """Offsets into an array of ``end`` items: ``length`` values from 0 to ``end``, never decreasing."""
    _length(offsets, length, where, name)
    if offsets[0] != 0 or offsets[-1] != end:
        raise IndexFormatError(f"{where}/{name}.npy: must run from 0 to {end}, runs from {offsets[0]} to {offsets[-1]}")
    if length > 1 and np.any(np.diff(offsets.astype(np.int64)) < 0):
        position = int(np.argmax(np.diff(offsets.astype(np.int64)) < 0))
        raise IndexFormatError(f"{where}/{name}.npy: offset {position + 1} decreases")


def _check_id_hashes(segment, num_docs: int, where) -> None:
    hashes, docs = segment.doc_id_hashes, segment.doc_id_hash_docs
    _length(hashes, num_docs, where, "doc_id_hashes")
    _length(docs, num_docs, where, "doc_id_hash_docs")
    if num_docs > 1 and np.any(hashes[1:] < hashes[:-1]):
        raise IndexFormatError(f"{where}/doc_id_hashes.npy: hashes are not sorted")
    if num_docs and (int(docs.max()) >= num_docs or np.any(np.bincount(docs, minlength=num_docs) != 1)):
        raise IndexFormatError(f"{where}/doc_id_hash_docs.npy: not a permutation of the segment's documents")


def _check_block_maxima(b, vocab: int, num_blocks: int, where) -> None:
    _length(b.bm_dense_slot, vocab, where, "bm_dense_slot")
    rows = b.bm_dense.shape[0] if b.bm_dense.ndim == 2 else -1
    if b.bm_dense.ndim != 2 or b.bm_dense.shape[1] != num_blocks:
        raise IndexFormatError(f"{where}/bm_dense.npy: shape {b.bm_dense.shape}, expected (rows, {num_blocks})")
    slots = b.bm_dense_slot[b.bm_dense_slot >= 0]
    if np.any(b.bm_dense_slot < -1) or len(slots) != rows or (rows and np.any(np.bincount(slots, minlength=rows) != 1)):
        raise IndexFormatError(f"{where}/bm_dense_slot.npy: slots must name each of the {rows} dense rows once")
