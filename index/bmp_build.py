"""Block-Max Pruning structures, derived from the term-major postings of a (reordered) index.

Docs ``[j * b, (j + 1) * b)`` form block ``j``. Written arrays:

* the per-block forward index, term-major inside each block: block ``j``'s entries are
  ``block_term_offsets[j]:block_term_offsets[j + 1]`` with sorted ``block_terms`` (uint32);
  entry ``e``'s postings start at ``block_entry_starts[e]`` (uint32, relative to the block's
  first posting ``block_post_offsets[j]``) and end where the next entry of the block starts
  (or at the block's end); a posting is a doc offset inside the block (``block_post_docs``,
  uint8) and its impact (``block_post_impacts``, uint8);
* per-term block maxima, dense (``bm_dense[slot, block]`` uint8, for terms present in many
  blocks; ``bm_dense_slot[t]`` is the slot or -1) or sparse (``bm_sparse_offsets`` int64 per
  term into ``bm_sparse_blocks`` uint32 / ``bm_sparse_max`` uint8), whichever is smaller;
* ``term_kth_impacts[t, i]`` (uint8): the ``SEED_KS[i]``-th largest impact of term ``t``
  (0 when fewer postings), seeds for the top-k threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from index.format import new_array_file

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
                  block_terms, block_entry_starts, block_post_docs, block_post_impacts):
    """Scatter term-major postings into the block-major forward index (terms stay sorted)."""
    num_blocks = block_term_offsets.shape[0] - 1
    entry_cursor = block_term_offsets[:-1].copy()
    post_cursor = block_post_offsets[:-1].copy()
    for t in range(offsets.shape[0] - 1):
        last = -1
        for p in range(offsets[t], offsets[t + 1]):
            blk = docs[p] // block_size
            if blk != last:
                e = entry_cursor[blk]
                block_terms[e] = t
                block_entry_starts[e] = post_cursor[blk] - block_post_offsets[blk]
                entry_cursor[blk] = e + 1
                last = blk
            q = post_cursor[blk]
            block_post_docs[q] = docs[p] - blk * block_size
            block_post_impacts[q] = impacts[p]
            post_cursor[blk] = q + 1
    return num_blocks


@njit(cache=True, nogil=True)
def _fill_block_maxima(offsets, docs, impacts, block_size, dense_slot, bm_dense,
                       sparse_offsets, sparse_blocks, sparse_max):
    for t in range(offsets.shape[0] - 1):
        slot = dense_slot[t]
        cursor = sparse_offsets[t] - 1
        last = -1
        for p in range(offsets[t], offsets[t + 1]):
            blk = docs[p] // block_size
            if slot >= 0:
                if impacts[p] > bm_dense[slot, blk]:
                    bm_dense[slot, blk] = impacts[p]
                continue
            if blk != last:
                cursor += 1
                sparse_blocks[cursor] = blk
                sparse_max[cursor] = 0
                last = blk
            if impacts[p] > sparse_max[cursor]:
                sparse_max[cursor] = impacts[p]


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
    """Write the BMP arrays (module docstring) into ``out_dir`` as .npy files.

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
    # The two big ones are memory-mapped files, so a large index builds in bounded memory.
    arrays = {
        "block_terms": new_array_file(out_dir, "block_terms", np.uint32, num_entries),
        "block_entry_starts": new_array_file(out_dir, "block_entry_starts", np.uint32, num_entries),
        "block_post_docs": new_array_file(out_dir, "block_post_docs", np.uint8, num_postings),
        "block_post_impacts": new_array_file(out_dir, "block_post_impacts", np.uint8, num_postings),
    }
    _fill_forward(offsets, docs, impacts, block_size, block_term_offsets, block_post_offsets,
                  arrays["block_terms"], arrays["block_entry_starts"], arrays["block_post_docs"],
                  arrays["block_post_impacts"])
    arrays["block_term_offsets"] = block_term_offsets
    arrays["block_post_offsets"] = block_post_offsets
    arrays.update(_block_maxima(offsets, docs, impacts, block_size, num_blocks, term_entries))
    arrays["term_kth_impacts"] = _kth_impacts(offsets, impacts, np.array(SEED_KS, dtype=np.int64))
    for name, array in arrays.items():
        if isinstance(array, np.memmap):
            array.flush()
        elif array.size or not (out_dir / f"{name}.npy").exists():
            np.save(out_dir / f"{name}.npy", array)
    return num_blocks


def _block_maxima(offsets, docs, impacts, block_size, num_blocks, term_entries) -> dict:
    # Dense costs num_blocks bytes, sparse 5 bytes per block holding the term; dense is also
    # the faster of the two to sum, so it wins ties.
    dense = term_entries * 5 >= num_blocks
    dense_slot = np.full(len(term_entries), -1, dtype=np.int32)
    dense_slot[dense] = np.arange(int(dense.sum()), dtype=np.int32)
    sparse_offsets = _prefix(np.where(dense, 0, term_entries))
    arrays = {
        "bm_dense_slot": dense_slot,
        "bm_dense": np.zeros((int(dense.sum()), num_blocks), dtype=np.uint8),
        "bm_sparse_offsets": sparse_offsets,
        "bm_sparse_blocks": np.empty(int(sparse_offsets[-1]), dtype=np.uint32),
        "bm_sparse_max": np.empty(int(sparse_offsets[-1]), dtype=np.uint8),
    }
    _fill_block_maxima(offsets, docs, impacts, block_size, dense_slot, arrays["bm_dense"],
                       sparse_offsets, arrays["bm_sparse_blocks"], arrays["bm_sparse_max"])
    return arrays


def _prefix(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out
