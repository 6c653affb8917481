"""Typed views of a segment's postings, the one place the kernels learn the layout from.

A kernel takes a `TermView` or a `BlockView` (NamedTuples of arrays: Numba compiles field
access by name, so two arrays of one dtype can never be swapped by position) and reads the
layout of ``index.bmp_build`` through the helpers below. Fields are named as in the module
docstring of ``index.bmp_build``, without the ``term_``/``block_`` prefix.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from lsr.index.format import CHUNK_BITS, PostingsArrays


class TermView(NamedTuple):
    """Term-major postings and their block-max entries. Term ``t``'s entries are
    ``entry_offsets[t]:entry_offsets[t + 1]``: entry ``x`` is in block ``entry_blocks[x]`` and
    its largest impact is ``entry_max[x]``. Term ``t``'s postings with a doc id in chunk ``c``
    (ids ``[c * 2^16, (c + 1) * 2^16)``) are `chunk_postings` ``(view, t, c)``: the low 16 bits
    of the doc id (``post_docs``, increasing) and the impact; ``chunks`` chunks per term."""

    block_size: np.int64
    chunks: np.int64
    entry_offsets: np.ndarray
    entry_blocks: np.ndarray
    entry_max: np.ndarray
    chunk_starts: np.ndarray
    post_docs: np.ndarray
    post_impacts: np.ndarray


class BlockView(NamedTuple):
    """The per-block forward index: block ``j``'s entries are
    ``term_offsets[j]:term_offsets[j + 1]`` with sorted ``terms``; entry ``e``'s postings run
    from ``post_offsets[j] + entry_starts[e]`` to the next entry's start (or the block's end).
    With it, the dense block-max rows: ``bm_dense[dense_slot[t], j]`` for a term with a slot,
    and the 16-bit impacts ``post_impacts16`` beside ``post_impacts`` (empty when the segment
    has none, ``index.quantize.fine_impacts``)."""

    block_size: np.int64
    term_offsets: np.ndarray
    terms: np.ndarray
    entry_starts: np.ndarray
    post_offsets: np.ndarray
    post_docs: np.ndarray
    post_impacts: np.ndarray
    dense_slot: np.ndarray
    bm_dense: np.ndarray
    post_impacts16: np.ndarray


NO_FINE_IMPACTS = np.zeros(0, dtype=np.uint16)


def has_fine_impacts(postings: PostingsArrays) -> bool:
    """Whether a segment keeps 16-bit impacts (``block_post_impacts16``)."""
    return postings.block_post_impacts16 is not None


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view: memory maps are read-only and small arrays are not, and Numba types
    them differently; views of one kind compile once."""
    view = array.view()
    view.setflags(write=False)
    return view


def term_view(postings: PostingsArrays) -> TermView:
    """The `TermView` of a segment's postings (made once, then kept with them: a segment never
    changes, and a search asks for it on every query)."""
    if (view := postings.__dict__.get("_term_view")) is None:
        view = postings._term_view = _make_term_view(postings)
    return view


def block_view(postings: PostingsArrays) -> BlockView:
    """The `BlockView` of a segment's postings (made once, then kept with them)."""
    if (view := postings.__dict__.get("_block_view")) is None:
        view = postings._block_view = _make_block_view(postings)
    return view


def _make_term_view(postings: PostingsArrays) -> TermView:
    p = postings
    return TermView(np.int64(p.block_size), np.int64(p.chunks), *(readonly(a) for a in (
        p.term_entry_offsets, p.term_entry_blocks, p.term_entry_max, p.term_chunk_starts, p.term_post_docs,
        p.term_post_impacts)))


def term_post_doc_ids(postings: PostingsArrays) -> np.ndarray:
    """The doc id (int64) of every term-major posting, materialised (for tests and small indexes)."""
    return _doc_ids_of(term_view(postings), np.empty(len(postings.term_post_docs), dtype=np.int64))


def _make_block_view(postings: PostingsArrays) -> BlockView:
    p = postings
    return BlockView(np.int64(p.block_size), *(readonly(a) for a in (
        p.block_term_offsets, p.block_terms, p.block_entry_starts, p.block_post_offsets, p.block_post_docs,
        p.block_post_impacts, p.bm_dense_slot, p.bm_dense,
        p.block_post_impacts16 if p.block_post_impacts16 is not None else NO_FINE_IMPACTS)))


# kernels


@njit(cache=True, nogil=True)
def find_sorted(sorted_values, lo, hi, value):
    """First index in [lo, hi) whose value is >= ``value``, or hi (binary search)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def chunk_postings(view, t, c):
    """The posting range ``[start, end)`` of term ``t`` in chunk ``c`` of a `TermView`; a doc
    id there is ``c << CHUNK_BITS | post_docs[p]``."""
    i = t * view.chunks + c
    return np.int64(view.chunk_starts[i]), np.int64(view.chunk_starts[i + 1])


@njit(cache=True, nogil=True)
def _doc_ids_of(view, out):
    for t in range(view.entry_offsets.shape[0] - 1):
        for c in range(view.chunks):
            start, end = chunk_postings(view, t, c)
            for p in range(start, end):
                out[p] = (c << CHUNK_BITS) | np.int64(view.post_docs[p])
    return out


@njit(cache=True, nogil=True)
def block_entry_postings(view, blk, e):
    """The posting range ``[start, end)`` of entry ``e`` of block ``blk`` in ``view.post_*``."""
    base = view.post_offsets[blk]
    if e + 1 < view.term_offsets[blk + 1]:
        return base + view.entry_starts[e], base + view.entry_starts[e + 1]
    return base + view.entry_starts[e], view.post_offsets[blk + 1]


# A query with more terms than this scores a block by one pass over the block's entries (about
# 540 on the 1M benchmark) instead of a binary search per query term: the crossover on the dev
# query sample (``eval/results/bench_block_scoring_1m``: the pass takes 0.69-0.74x the searches'
# time past 48 terms, 0.90-0.97x at 33-48, 1.05-2x at 32 and fewer, where the block-max data
# lets most searches be skipped).
SCAN_MIN_TERMS = 32
MAX_POSITION = np.iinfo(np.int16).max


@njit(cache=True, nogil=True)
def query_positions(q_terms, vocab_size, min_terms=SCAN_MIN_TERMS):
    """For `score_block_float64`: the position of each term in the query (int16, -1 for a term
    not in it, ``vocab_size`` entries at least; a small table stays in cache) when the query has
    more than ``min_terms`` terms (long enough to score blocks by a pass), else an empty array."""
    if q_terms.shape[0] <= min_terms or q_terms.shape[0] > MAX_POSITION:
        return np.empty(0, dtype=np.int16)
    size = vocab_size
    for j in range(q_terms.shape[0]):
        size = max(size, np.int64(q_terms[j]) + 1)
    positions = np.full(size, -1, dtype=np.int16)
    for j in range(q_terms.shape[0]):
        positions[q_terms[j]] = j
    return positions


@njit(cache=True, nogil=True)
def score_block_float64(view, impacts, blk, q_terms, q_weights, mask, sparse_bit, positions, acc):
    """Add ``q_weights[j] * impact`` (float64) of every query term found in block ``blk`` to
    ``acc[doc offset]``, query terms in their order (sorted ascending, as canonical queries are):
    the same products in the same order as a term-at-a-time float64 sweep, so the same sums.
    ``impacts``: ``view.post_impacts`` or ``view.post_impacts16`` (each product of a float32
    weight and a 16-bit impact is exact in float64, as with 8 bits).

    Two ways to find the query terms, with the same sums (the block's entries are in term order
    too): with ``positions`` (`query_positions`, a long query) one pass over the block's entries
    looks each up; without (empty), a binary search per query term, where a term the block-max
    data says is absent costs none: a zero in its dense row, or, for query term ``j`` with
    ``sparse_bit[j] >= 0``, a clear bit ``sparse_bit[j]`` of ``mask`` (BMP's bounds pass sets
    them; ``-1`` everywhere when not known)."""
    lo, hi = view.term_offsets[blk], view.term_offsets[blk + 1]
    if positions.shape[0] > 0:
        for e in range(lo, hi):
            j = positions[view.terms[e]]
            if j >= 0:
                _add_entry(view, impacts, blk, e, np.float64(q_weights[j]), acc)
        return
    for j in range(q_terms.shape[0]):
        slot = view.dense_slot[q_terms[j]]
        if slot >= 0:
            if view.bm_dense[slot, blk] == 0:
                continue
        elif sparse_bit[j] >= 0 and not (mask >> sparse_bit[j]) & 1:
            continue
        e = find_sorted(view.terms, lo, hi, q_terms[j])
        if e >= hi:
            return
        lo = e
        if view.terms[e] != q_terms[j]:
            continue
        _add_entry(view, impacts, blk, e, np.float64(q_weights[j]), acc)
        lo = e + 1


@njit(cache=True, nogil=True)
def _add_entry(view, impacts, blk, e, w, acc):
    start, end = block_entry_postings(view, blk, e)
    for p in range(start, end):
        acc[view.post_docs[p]] += w * impacts[p]
