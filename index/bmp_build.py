"""The index's postings, stored once for both scorers, from term-major postings.

Docs ``[j * b, (j + 1) * b)`` form block ``j``; an *entry* is one term's postings inside one
block. Written arrays:

* term-major block-max entries: term ``t``'s entries are
  ``term_entry_offsets[t]:term_entry_offsets[t + 1]``, by block; entry ``x`` (one term's
  postings inside one block) is in block ``term_entry_blocks[x]`` (uint32) and has the largest
  impact ``term_entry_max[x]`` (uint8): BMP's sparse block-max list;
* term-major postings in doc-id chunks of ``2^16`` docs (``index.format.CHUNK_BITS``): with
  ``C`` chunks (``index.format.chunk_count`` of ``num_blocks * block_size``), term ``t``'s
  postings in chunk ``c`` are ``term_chunk_starts[t * C + c]:term_chunk_starts[t * C + c + 1]``
  (uint32 where the postings fit, else int64; ``T * C + 1`` of them): the low 16 bits of the
  doc id (``term_post_docs``, uint16, increasing) and an impact (``term_post_impacts``, uint8).
  The exhaustive scorer adds a term's postings in one sequential sweep with no per-block step
  (a doc id is ``c << 16 | low``);
* the per-block forward index, a second copy of the postings laid out block by block so that
  scoring one block reads one small contiguous region: block ``j``'s entries are
  ``block_term_offsets[j]:block_term_offsets[j + 1]`` with sorted terms ``block_terms``
  (uint16 when the vocabulary has at most 65,536 terms, else uint32; readers take either);
  entry ``e``'s postings start at ``block_entry_starts[e]`` (uint16 when every block has
  fewer than 65,536 postings, else uint32; relative to the block's first posting
  ``block_post_offsets[j]``) and end where the next entry of the block starts (or at the
  block's end), as doc offset (``block_post_docs``, uint8) and impact
  (``block_post_impacts``, uint8). BMP finds a query term in a block by binary search;
* dense block maxima for terms present in many blocks (``bm_dense[slot, block]`` uint8,
  ``bm_dense_slot[t]`` the slot or -1): a row is faster to sum than the term's entries;
* ``term_kth_impacts[t, i]`` (uint8): the ``SEED_KS[i]``-th largest impact of term ``t``
  (0 when fewer postings), seeds for the top-k threshold (a column serves a k up to its own,
  less the deleted documents at or above that impact).

Term-major postings with 4-byte doc ids cost 5 bytes a posting; this layout costs 5 a posting
(3 term-major, 2 in the forward index) plus 9 an entry (4 + 1 + 2 + 2), and BP makes entries
several times fewer than postings. Measured on 1M docs: one copy in term order made BMP 30% slower, one
copy in block order made the exhaustive scorer 3 times slower. Until segment format 2 the
term-major postings were an in-block offset (uint8) per posting and a start per entry (uint32):
a byte a posting less but 4 an entry more, and a sweep 2.4 times slower (a block step per
entry of about three postings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from lsr.index.format import CHUNK_BITS, CHUNK_MASK, chunk_count, load_array, new_array_file

SEED_KS = (10, 100, 1000, 2000, 5000)  # the wider ones serve k = 1000 with deletions
MAX_BLOCK_SIZE = 256  # doc offsets inside a block are uint8


def block_term_type(vocab_size: int):
    """``block_terms``' dtype: uint16 where every term id fits (BERT's 30,522 do), else uint32."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


# kernels


@njit(cache=True, nogil=True)
def _count_entries(offsets, docs, block_size, num_blocks):
    """Entries (term runs inside a block) per block and per term, and postings per block."""
    block_entries = np.zeros(num_blocks, dtype=np.int64)
    block_postings = np.zeros(num_blocks, dtype=np.int64)
    term_entries = np.zeros(offsets.shape[0] - 1, dtype=np.int64)
    for t in range(offsets.shape[0] - 1):
        last = -1
        for p in range(offsets[t], offsets[t + 1]):
            blk = docs[p] // block_size
            block_postings[blk] += 1
            if blk != last:
                block_entries[blk] += 1
                term_entries[t] += 1
                last = blk
    return block_entries, block_postings, term_entries


@njit(cache=True, nogil=True)
def _start_chunks(chunk_starts, t, chunks, c, until, position):
    """Term ``t``'s chunks ``c`` up to ``until`` (exclusive) start at posting ``position``;
    returns the next chunk to start (``chunk_starts`` as the module docstring lays it out)."""
    while c < until:
        chunk_starts[t * chunks + c] = position
        c += 1
    return c


@njit(cache=True, nogil=True)
def _fill_term_view(offsets, docs, impacts, block_size, chunks, term_entry_blocks, term_entry_max, term_chunk_starts,
                    term_post_docs):
    x = -1
    for t in range(offsets.shape[0] - 1):
        last = -1
        c = 0
        for p in range(offsets[t], offsets[t + 1]):
            doc = np.int64(docs[p])
            blk = doc // block_size
            if blk != last:
                x += 1
                term_entry_blocks[x] = blk
                term_entry_max[x] = 0
                last = blk
            if impacts[p] > term_entry_max[x]:
                term_entry_max[x] = impacts[p]
            c = _start_chunks(term_chunk_starts, t, chunks, c, (doc >> CHUNK_BITS) + 1, p)
            term_post_docs[p] = doc & CHUNK_MASK
        _start_chunks(term_chunk_starts, t, chunks, c, chunks, offsets[t + 1])
    term_chunk_starts[term_chunk_starts.shape[0] - 1] = offsets[offsets.shape[0] - 1]


@njit(cache=True, nogil=True)
def _fill_blocks(offsets, docs, impacts, block_size, block_term_offsets, block_post_offsets, block_terms,
                 block_entry_starts, block_post_docs, block_post_impacts):
    """The forward index: each block's entries, terms ascending, postings copied block by block."""
    entry_cursor = block_term_offsets[:-1].copy()
    post_cursor = block_post_offsets[:-1].copy()
    for t in range(offsets.shape[0] - 1):
        last = -1
        for p in range(offsets[t], offsets[t + 1]):
            doc = np.int64(docs[p])
            blk = doc // block_size
            if blk != last:
                e = entry_cursor[blk]
                block_terms[e] = t
                block_entry_starts[e] = post_cursor[blk] - block_post_offsets[blk]
                entry_cursor[blk] = e + 1
                last = blk
            q = post_cursor[blk]
            block_post_docs[q] = doc - blk * block_size
            block_post_impacts[q] = impacts[p]
            post_cursor[blk] = q + 1


@njit(cache=True, nogil=True)
def _chunk_entry_postings(entry_offsets, entry_blocks, entry_starts, in_block_docs, block_size, chunks, chunk_starts,
                          low_docs):
    for t in range(entry_offsets.shape[0] - 1):
        c = 0
        for x in range(entry_offsets[t], entry_offsets[t + 1]):
            first = np.int64(entry_blocks[x]) * block_size
            for p in range(entry_starts[x], entry_starts[x + 1]):
                doc = first + np.int64(in_block_docs[p])
                c = _start_chunks(chunk_starts, t, chunks, c, (doc >> CHUNK_BITS) + 1, p)
                low_docs[p] = doc & CHUNK_MASK
        _start_chunks(chunk_starts, t, chunks, c, chunks, entry_starts[entry_offsets[t + 1]])
    chunk_starts[chunk_starts.shape[0] - 1] = in_block_docs.shape[0]


@njit(cache=True, nogil=True)
def _fill_dense_maxima(term_entry_offsets, term_entry_blocks, term_entry_max, dense_slot, bm_dense):
    for t in range(dense_slot.shape[0]):
        slot = dense_slot[t]
        if slot >= 0:
            for x in range(term_entry_offsets[t], term_entry_offsets[t + 1]):
                bm_dense[slot, term_entry_blocks[x]] = term_entry_max[x]


@njit(cache=True, nogil=True)
def kth_levels(impacts, start, end, ks, histogram, out_row):
    """``out_row[i]``: the ``ks[i]``-th largest of ``impacts[start:end]`` (left as it is when
    fewer are above 0), from a 256-level histogram (``histogram``: scratch of 256)."""
    histogram[:] = 0
    for p in range(start, end):
        histogram[impacts[p]] += 1
    for i in range(ks.shape[0]):
        seen = 0
        for level in range(255, 0, -1):
            seen += histogram[level]
            if seen >= ks[i]:
                out_row[i] = level
                break


@njit(cache=True, nogil=True)
def _kth_impacts(offsets, impacts, ks):
    """k-th largest impact per term (0 when fewer postings)."""
    out = np.zeros((offsets.shape[0] - 1, ks.shape[0]), dtype=np.uint8)
    histogram = np.zeros(256, dtype=np.int64)
    for t in range(offsets.shape[0] - 1):
        if offsets[t + 1] - offsets[t] >= ks[0]:
            kth_levels(impacts, offsets[t], offsets[t + 1], ks, histogram, out[t])
    return out


# wrappers


def build_bmp_arrays(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, num_docs: int,
                     block_size: int, out_dir: Path) -> int:
    """Write the arrays of the module docstring into ``out_dir`` as .npy files, from
    term-major postings (``offsets`` int64, ``docs`` uint32 increasing per term, ``impacts``),
    except ``term_post_impacts``, which is ``impacts`` itself (see `finish_postings`).

    Returns:
        The number of blocks.
    """
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"block size must be between 1 and {MAX_BLOCK_SIZE}, got {block_size}")
    num_blocks = max((num_docs + block_size - 1) // block_size, 1)
    block_entries, block_postings, term_entries = _count_entries(offsets, docs, block_size, num_blocks)
    num_entries, num_postings = int(term_entries.sum()), int(offsets[-1])
    start_type = np.uint32 if num_postings < 2**32 else np.int64
    block_start_type = np.uint16 if block_postings.max(initial=0) < 2**16 else np.uint32
    # The big ones are memory-mapped files, so a large index builds in bounded memory.
    chunks = chunk_count(num_blocks * block_size)
    arrays = {
        "term_entry_blocks": new_array_file(out_dir, "term_entry_blocks", np.uint32, num_entries),
        "term_entry_max": new_array_file(out_dir, "term_entry_max", np.uint8, num_entries),
        "term_chunk_starts": new_array_file(out_dir, "term_chunk_starts", start_type,
                                            (len(offsets) - 1) * chunks + 1),
        "term_post_docs": new_array_file(out_dir, "term_post_docs", np.uint16, num_postings),
    }
    _fill_term_view(offsets, docs, impacts, block_size, chunks, *arrays.values())
    term_entry_offsets = _prefix(term_entries)
    block_term_offsets, block_post_offsets = _prefix(block_entries), _prefix(block_postings)
    forward = {
        "block_terms": new_array_file(out_dir, "block_terms", block_term_type(len(offsets) - 1), num_entries),
        "block_entry_starts": new_array_file(out_dir, "block_entry_starts", block_start_type, num_entries),
        "block_post_docs": new_array_file(out_dir, "block_post_docs", np.uint8, num_postings),
        "block_post_impacts": new_array_file(out_dir, "block_post_impacts", np.uint8, num_postings),
    }
    _fill_blocks(offsets, docs, impacts, block_size, block_term_offsets, block_post_offsets, *forward.values())
    arrays.update(forward)
    # A dense row costs num_blocks bytes where the term's entries (kept anyway) cost 5 each to
    # scan; a row is added where it is faster to sum: the term is in a fifth of the blocks.
    dense = term_entries * 5 >= num_blocks
    dense_slot = np.full(len(term_entries), -1, dtype=np.int32)
    dense_slot[dense] = np.arange(int(dense.sum()), dtype=np.int32)
    bm_dense = np.zeros((int(dense.sum()), num_blocks), dtype=np.uint8)
    _fill_dense_maxima(term_entry_offsets, arrays["term_entry_blocks"], arrays["term_entry_max"], dense_slot, bm_dense)
    arrays.update({
        "term_entry_offsets": term_entry_offsets,
        "block_term_offsets": block_term_offsets,
        "block_post_offsets": block_post_offsets,
        "bm_dense_slot": dense_slot,
        "bm_dense": bm_dense,
        "term_kth_impacts": _kth_impacts(offsets, impacts, np.array(SEED_KS, dtype=np.int64)),
    })
    for name, array in arrays.items():
        if isinstance(array, np.memmap):
            array.flush()
        elif array.size or not (out_dir / f"{name}.npy").exists():
            np.save(out_dir / f"{name}.npy", array)
    return num_blocks


def chunk_term_postings(out_dir: Path, num_blocks: int, block_size: int) -> None:
    """Segment format 1's term postings (``term_entry_starts`` and in-block ``term_post_docs``,
    uint8) in ``out_dir`` become format 2's (``term_chunk_starts`` and low 16-bit doc ids): the
    same postings in the same order, so ``term_post_impacts`` is kept as it is. The old files are
    replaced (their names unlinked first: they may be hard links into another index)."""
    offsets, blocks = load_array(out_dir / "term_entry_offsets.npy"), load_array(out_dir / "term_entry_blocks.npy")
    starts, old_docs = load_array(out_dir / "term_entry_starts.npy"), load_array(out_dir / "term_post_docs.npy")
    chunks = chunk_count(num_blocks * block_size)
    chunk_starts = np.empty((len(offsets) - 1) * chunks + 1, dtype=starts.dtype)
    low_docs = np.empty(len(old_docs), dtype=np.uint16)
    _chunk_entry_postings(offsets, blocks, starts, old_docs, block_size, chunks, chunk_starts, low_docs)
    del starts, old_docs
    for name in ("term_entry_starts", "term_post_docs"):
        (out_dir / f"{name}.npy").unlink()
    np.save(out_dir / "term_chunk_starts.npy", chunk_starts)
    np.save(out_dir / "term_post_docs.npy", low_docs)


def finish_postings(out_dir: Path, num_docs: int, block_size: int) -> int:
    """Turn the temporary term-major ``postings_*.npy`` in ``out_dir`` into the index's
    arrays (the impacts become ``term_post_impacts`` as they are). Returns the number of blocks."""
    names = ("postings_offsets", "postings_docs", "postings_impacts")
    num_blocks = build_bmp_arrays(*(load_array(out_dir / f"{n}.npy") for n in names), num_docs, block_size, out_dir)
    (out_dir / "postings_impacts.npy").rename(out_dir / "term_post_impacts.npy")
    for name in names[:2]:
        (out_dir / f"{name}.npy").unlink()
    return num_blocks


def _prefix(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out
