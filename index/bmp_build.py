"""The index's postings, stored once for both scorers, derived from term-major postings.

Docs ``[j * b, (j + 1) * b)`` form block ``j``; an *entry* is one term's postings inside one
block. Written arrays:

* the per-block forward index, term-major inside each block: block ``j``'s entries are
  ``block_term_offsets[j]:block_term_offsets[j + 1]`` with sorted ``block_terms`` (uint32);
  entry ``e``'s postings start at ``block_entry_starts[e]`` (uint16 when every block has
  fewer than 65,536 postings, else uint32; relative to the block's first posting
  ``block_post_offsets[j]``) and end where the next entry of the block starts (or at the
  block's end); a posting is a doc offset inside the block (``block_post_docs``, uint8) and
  its impact (``block_post_impacts``, uint8);
* the term view of the same entries, which is also the sparse block-max list: term ``t``'s
  entries are ``term_entry_offsets[t]:term_entry_offsets[t + 1]``, by block, each with its
  block (``term_entry_blocks`` uint32), its entry id (``term_entry_ids``) and its largest
  impact (``term_entry_max`` uint8). The exhaustive scorer walks it term at a time;
* dense block maxima for terms present in many blocks (``bm_dense[slot, block]`` uint8,
  ``bm_dense_slot[t]`` the slot or -1), where a row is smaller than the term's entries and
  faster to sum;
* ``term_kth_impacts[t, i]`` (uint8): the ``SEED_KS[i]``-th largest impact of term ``t``
  (0 when fewer postings), seeds for the top-k threshold.

Term-major postings with 4-byte doc ids would cost 5 bytes a posting; this layout costs 2 a
posting plus about 17 an entry, and BP makes entries several times fewer than postings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from index.format import load_array, new_array_file

SEED_KS = (10, 100, 1000)
MAX_BLOCK_SIZE = 256  # doc offsets inside a block are uint8

# kernels


@njit(cache=True, nogil=True)
def _count_block_entries(offsets, docs, block_size, num_blocks):
    """Per block: number of (term, block) entries and of postings; per term: entries."""
    entries = np.zeros(num_blocks, dtype=np.int64)
    postings = np.zeros(num_blocks, dtype=np.int64)
    term_entries = np.zeros(offsets.shape[0] - 1, dtype=np.int64)
    for t in range(offsets.shape[0] - 1):
        last = -1
        for p in range(offsets[t], offsets[t + 1]):
            blk = docs[p] // block_size
            postings[blk] += 1
            if blk != last:
                entries[blk] += 1
                term_entries[t] += 1
                last = blk
    return entries, postings, term_entries


@njit(cache=True, nogil=True)
def _fill_forward(offsets, docs, impacts, block_size, block_term_offsets, block_post_offsets,
                  block_terms, block_entry_starts, block_post_docs, block_post_impacts,
                  term_entry_blocks, term_entry_ids, term_entry_max):
    """Scatter term-major postings into the block-major forward index (terms stay sorted)
    and write the term view of its entries."""
    entry_cursor = block_term_offsets[:-1].copy()
    post_cursor = block_post_offsets[:-1].copy()
    x = -1  # position in the term view
    for t in range(offsets.shape[0] - 1):
        last = -1
        for p in range(offsets[t], offsets[t + 1]):
            blk = docs[p] // block_size
            if blk != last:
                e = entry_cursor[blk]
                block_terms[e] = t
                block_entry_starts[e] = post_cursor[blk] - block_post_offsets[blk]
                entry_cursor[blk] = e + 1
                x += 1
                term_entry_blocks[x] = blk
                term_entry_ids[x] = e
                term_entry_max[x] = 0
                last = blk
            if impacts[p] > term_entry_max[x]:
                term_entry_max[x] = impacts[p]
            q = post_cursor[blk]
            block_post_docs[q] = docs[p] - blk * block_size
            block_post_impacts[q] = impacts[p]
            post_cursor[blk] = q + 1


@njit(cache=True, nogil=True)
def _fill_dense_maxima(term_entry_offsets, term_entry_blocks, term_entry_max, dense_slot, bm_dense):
    for t in range(dense_slot.shape[0]):
        slot = dense_slot[t]
        if slot >= 0:
            for x in range(term_entry_offsets[t], term_entry_offsets[t + 1]):
                bm_dense[slot, term_entry_blocks[x]] = term_entry_max[x]


@njit(cache=True, nogil=True)
def _kth_impacts(offsets, impacts, ks):
    """k-th largest impact per term, from a 256-level histogram of its postings."""
    out = np.zeros((offsets.shape[0] - 1, ks.shape[0]), dtype=np.uint8)
    histogram = np.zeros(256, dtype=np.int64)
    for t in range(offsets.shape[0] - 1):
        if offsets[t + 1] - offsets[t] < ks[0]:
            continue
        histogram[:] = 0
        for p in range(offsets[t], offsets[t + 1]):
            histogram[impacts[p]] += 1
        for i in range(ks.shape[0]):
            seen = 0
            for level in range(255, 0, -1):
                seen += histogram[level]
                if seen >= ks[i]:
                    out[t, i] = level
                    break
    return out


# wrappers


def build_bmp_arrays(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, num_docs: int,
                     block_size: int, out_dir: Path) -> int:
    """Write the arrays of the module docstring into ``out_dir`` as .npy files, from
    term-major postings (``offsets`` int64, ``docs`` uint32 increasing per term, ``impacts``).

    Returns:
        The number of blocks.
    """
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"block size must be between 1 and {MAX_BLOCK_SIZE}, got {block_size}")
    num_blocks = max((num_docs + block_size - 1) // block_size, 1)
    entries, postings, term_entries = _count_block_entries(offsets, docs, block_size, num_blocks)
    block_term_offsets = _prefix(entries)
    block_post_offsets = _prefix(postings)
    num_entries, num_postings = int(block_term_offsets[-1]), int(block_post_offsets[-1])
    start_type = np.uint16 if postings.max(initial=0) < 2**16 else np.uint32
    entry_type = np.uint32 if num_entries < 2**32 else np.int64
    # The big ones are memory-mapped files, so a large index builds in bounded memory.
    arrays = {
        "block_terms": new_array_file(out_dir, "block_terms", np.uint32, num_entries),
        "block_entry_starts": new_array_file(out_dir, "block_entry_starts", start_type, num_entries),
        "block_post_docs": new_array_file(out_dir, "block_post_docs", np.uint8, num_postings),
        "block_post_impacts": new_array_file(out_dir, "block_post_impacts", np.uint8, num_postings),
        "term_entry_blocks": new_array_file(out_dir, "term_entry_blocks", np.uint32, num_entries),
        "term_entry_ids": new_array_file(out_dir, "term_entry_ids", entry_type, num_entries),
        "term_entry_max": new_array_file(out_dir, "term_entry_max", np.uint8, num_entries),
    }
    _fill_forward(offsets, docs, impacts, block_size, block_term_offsets, block_post_offsets,
                  *arrays.values())
    term_entry_offsets = _prefix(term_entries)
    # A dense row costs num_blocks bytes, a term's entries 9 each (block, id, max) and are
    # kept anyway for the exhaustive scorer; a row is added where it is faster to sum, i.e.
    # where the term is in at least a fifth of the blocks.
    dense = term_entries * 5 >= num_blocks
    dense_slot = np.full(len(term_entries), -1, dtype=np.int32)
    dense_slot[dense] = np.arange(int(dense.sum()), dtype=np.int32)
    bm_dense = np.zeros((int(dense.sum()), num_blocks), dtype=np.uint8)
    _fill_dense_maxima(term_entry_offsets, arrays["term_entry_blocks"], arrays["term_entry_max"], dense_slot, bm_dense)
    arrays.update({
        "block_term_offsets": block_term_offsets,
        "block_post_offsets": block_post_offsets,
        "term_entry_offsets": term_entry_offsets,
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


def finish_postings(out_dir: Path, num_docs: int, block_size: int) -> int:
    """Turn the temporary term-major ``postings_*.npy`` in ``out_dir`` into the index's
    arrays, then delete them. Returns the number of blocks."""
    names = ("postings_offsets", "postings_docs", "postings_impacts")
    num_blocks = build_bmp_arrays(*(load_array(out_dir / f"{n}.npy") for n in names), num_docs, block_size, out_dir)
    for name in names:
        (out_dir / f"{name}.npy").unlink()
    return num_blocks


def _prefix(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out
