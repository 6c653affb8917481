"""Document vectors read back from an index's per-block forward index.

For explain (one document's terms and impacts) and for rebuilding an index (`lsr index
compact`): blocks are read in ranges, so memory stays bounded by the range, not the index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lsr.index.format import Segment
from lsr.index.quantize import FINE_LEVELS


def block_range_impacts(index: Segment, first_block: int, end_block: int, fine: bool = False) -> sp.csr_matrix:
    """uint8 impacts (as float32) of the docs of blocks ``[first_block, end_block)``; with
    ``fine``, the 16-bit impacts over 256 instead (8-bit levels with 8 more bits, exact in
    float32; the segment must have them).

    Returns:
        A ``(docs in the range, vocab_size)`` CSR matrix; row ``r`` is internal doc
        ``first_block * block_size + r``; terms of a row sorted.
    """
    b = index.postings
    size = b.block_size
    first_doc = first_block * size
    num_rows = max(0, min(index.num_docs, end_block * size) - first_doc)
    entry_lo, entry_hi = int(b.block_term_offsets[first_block]), int(b.block_term_offsets[end_block])
    entry_block = np.repeat(np.arange(first_block, end_block, dtype=np.int64),
                            np.diff(b.block_term_offsets[first_block : end_block + 1].astype(np.int64)))
    base = b.block_post_offsets[entry_block].astype(np.int64)
    starts = base + b.block_entry_starts[entry_lo:entry_hi].astype(np.int64)
    # An entry ends where the next entry of its block starts, the block's last one at its end.
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    if len(ends):
        ends[-1] = b.block_post_offsets[end_block]
    last_of_block = b.block_term_offsets[first_block + 1 : end_block + 1].astype(np.int64) - 1 - entry_lo
    last_of_block = last_of_block[last_of_block >= 0]
    ends[last_of_block] = b.block_post_offsets[entry_block[last_of_block] + 1]
    lengths = ends - starts
    postings = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
    terms = np.repeat(b.block_terms[entry_lo:entry_hi].astype(np.int64), lengths)
    rows = np.repeat(entry_block * size - first_doc, lengths) + b.block_post_docs[postings].astype(np.int64)
    if fine:
        if b.block_post_impacts16 is None:
            raise ValueError(f"segment {index.name} has no 16-bit impacts")
        impacts = b.block_post_impacts16[postings].astype(np.float32) / FINE_LEVELS
    else:
        impacts = b.block_post_impacts[postings].astype(np.float32)
    matrix = sp.csr_matrix((impacts, (rows, terms)), shape=(num_rows, index.vocab_size))
    matrix.sort_indices()
    return matrix


def document_impacts(index: Segment, doc: int, fine: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One internal doc's terms (uint32, sorted) and uint8 impacts (``fine``: uint16 impacts)."""
    if not 0 <= doc < index.num_docs:
        raise IndexError(f"internal doc id {doc} out of range [0, {index.num_docs})")
    block = doc // index.postings.block_size
    row = block_range_impacts(index, block, block + 1, fine)[doc - block * index.postings.block_size]
    if fine:
        return row.indices.astype(np.uint32), np.rint(row.data * FINE_LEVELS).astype(np.uint16)
    return row.indices.astype(np.uint32), row.data.astype(np.uint8)
