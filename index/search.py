"""Search over an index's segments and its write buffer, with one exact global top-k.

A `View` is what one search reads: the segments of a commit in order, each with its live
mask and base position (global keys are ``base + internal id``; ties break by key), plus the
write buffer's snapshot. The sparse query is merged once (``index.scorers.query``) and scaled
per segment (impacts are quantised per segment; scores stay in encoder units). Every segment
goes through the same scorer, chosen by the planner from the whole index's size, and offers
its candidates to one heap: BMP starts each segment from the k-th score found so far, so many
small segments cost little more than one. The buffer's documents are scored exactly in float
and offered last.

``precision`` says which impacts the segments are scored by: ``8-bit`` (the impacts the
bounds are made of), ``16-bit`` (each segment's 16-bit copy, ``index.quantize.fine_impacts``:
the result is exact over it, see ``index.scorers.bmp`` and ``index.scorers.exhaustive``), or
``auto``: 16-bit when every segment has the copy (indexes built before it, and CIFF imports,
have none), else 8-bit.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from lsr.index.buffer import BufferView
from lsr.index.dense import DenseIndex
from lsr.index.format import Segment
from lsr.index.scorers.bmp import (KernelGroup, _block_budget, _check_alpha_beta, _keep_top_terms, bmp_into,
                               bmp_into_batch, kernel_groups, kernel_segment, keep_top_terms_batch, ranked_results)
from lsr.index.scorers.exhaustive import (NO_DELETE_COUNTS, NO_DELETES, SearchResults, _check_k, segment_top_k,
                                      segment_top_k_batch)
from lsr.index.scorers.heap import TopK, heap_offer_many, heap_offer_positive
from lsr.index.postings_view import has_fine_impacts
from lsr.index.scorers.planner import SCORERS, choose_scorer
from lsr.index.scorers.query import merge_batch, merge_query, scale_batch, scale_query
from lsr.index.sparse_batch import SparseBatch


PRECISIONS = ("auto", "16-bit", "8-bit")


@dataclass(frozen=True)
class SegmentState:
    """One segment as a search sees it.

    Attributes:
        segment: the opened segment.
        base: global key of its document 0.
        live: uint8 per document (1 = live), or `NO_DELETES` when none is deleted.
        num_live: live documents.
        kth_deleted: deleted docs per term at or above each stored k-th impact (`NO_DELETE_COUNTS`
            when the commit deleted none; see ``index.scorers.bmp``).
        extra_deleted: documents deleted since the commit (by buffered writes).
        dense: the segment's faiss part, or None.
    """

    segment: Segment
    base: int = 0
    live: np.ndarray = field(default_factory=lambda: NO_DELETES)
    num_live: int = -1
    kth_deleted: np.ndarray = field(default_factory=lambda: NO_DELETE_COUNTS)
    extra_deleted: int = 0
    dense: DenseIndex | None = None

    def live_count(self) -> int:
        return self.segment.num_docs if self.num_live < 0 else self.num_live


@dataclass(frozen=True)
class View:
    """The segments and buffer one search reads (immutable)."""

    segments: tuple[SegmentState, ...]
    buffer: BufferView | None
    vocab_size: int
    owner: object = field(default=None, compare=False, repr=False)  # keeps the commit's pin while in use
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def fine(self, precision: str) -> bool:
        """Whether a search of this ``precision`` scores the 16-bit impacts (module docstring)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if "all_fine" not in self.cache:
            self.cache["all_fine"] = all(has_fine_impacts(s.segment.postings) for s in self.segments)
        if precision == "16-bit" and not self.cache["all_fine"]:
            lacking = [s.segment.name for s in self.segments if not has_fine_impacts(s.segment.postings)]
            raise ValueError(f"precision='16-bit' needs 16-bit impacts, which segment {lacking[0]} does not have "
                             f"(built without them, or imported): use precision='8-bit' or rebuild the index")
        return precision == "16-bit" or (precision == "auto" and self.cache["all_fine"])

    def kernel_groups(self) -> list[KernelGroup]:
        """The segments as the BMP kernel reads them (built on first use, then kept)."""
        if "kernel_groups" not in self.cache:
            self.cache["kernel_groups"] = kernel_groups([
                kernel_segment(s.segment, s.live, s.kth_deleted, s.extra_deleted, s.base) for s in self.segments])
        return self.cache["kernel_groups"]

    @property
    def buffer_base(self) -> int:
        last = self.segments[-1] if self.segments else None
        return last.base + last.segment.num_docs if last else 0

    @property
    def num_docs(self) -> int:
        """Live documents."""
        return sum(s.live_count() for s in self.segments) + (self.buffer.num_live if self.buffer else 0)

    def locate(self, key: int) -> tuple[SegmentState | None, int]:
        """``(segment state, internal id)`` of a global key; ``(None, row)`` for a buffer row."""
        if key >= self.buffer_base:
            return None, key - self.buffer_base
        bases = [s.base for s in self.segments]
        state = self.segments[bisect.bisect_right(bases, key) - 1]
        return state, key - state.base

    def doc_id(self, key: int) -> str:
        state, local = self.locate(key)
        return self.buffer.doc_id(local) if state is None else state.segment.doc_ids[local]

    def doc_ids(self, keys: np.ndarray) -> list[str]:
        """`doc_id` of many keys, grouped by owner: a segment or the buffer (a search's hits; per
        key, the lookup cost ten times the search at k = 1000)."""
        keys = np.asarray(keys, dtype=np.int64)
        if "bases" not in self.cache:
            self.cache["bases"] = np.array([s.base for s in self.segments] + [self.buffer_base], dtype=np.int64)
        owner = np.searchsorted(self.cache["bases"], keys, side="right") - 1  # as `locate`: the last base <= key
        if len(keys) and owner[0] < len(self.segments) and (owner == owner[0]).all():  # one segment holds them all
            state = self.segments[owner[0]]
            return state.segment.doc_ids.take(keys - state.base)
        names: list = [None] * len(keys)
        for i in np.unique(owner).tolist():
            rows = np.flatnonzero(owner == i)
            if i < len(self.segments):
                state = self.segments[i]
                for row, name in zip(rows.tolist(), state.segment.doc_ids.take(keys[rows] - state.base)):
                    names[row] = name
            else:
                for row in rows.tolist():
                    names[row] = self.buffer.doc_id(int(keys[row] - self.buffer_base))
        return names


def single_segment_view(segment: Segment) -> View:
    """A view of one segment with nothing deleted and no buffer (made once, then kept with the
    segment: a segment never changes, and building a view's kernel segments on every query cost
    about half of a BMP query's fixed cost on the 1M benchmark)."""
    if (view := segment.__dict__.get("_single_view")) is None:
        view = segment._single_view = View((SegmentState(segment),), None, segment.vocab_size)
    return view


def search_sparse(view: View, terms, weights, k: int = 10, scorer: str = "auto", alpha: float = 1.0,
                  beta: float = 1.0, max_blocks: int | None = None,
                  precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` live documents of a query vector (raw encoder weights).

    Returns:
        Global keys (int64) and scores (float64, encoder units), best first, ties by key;
        at ``alpha = beta = 1`` without ``max_blocks`` exact for every scorer (over the impacts
        ``precision`` chooses, module docstring).
    """
    k = _check_k(k)
    _check_alpha_beta(alpha, beta)
    budget = _block_budget(max_blocks)
    fine = view.fine(precision)
    merged_terms, merged_weights = merge_query(terms, weights, view.vocab_size)
    use_bmp = _use_bmp(view, len(merged_terms), scorer, alpha, beta, k, max_blocks)
    heap = TopK(k)
    if use_bmp:  # every segment's blocks in one bound order
        bmp_into(view.kernel_groups(), *_keep_top_terms(merged_terms, merged_weights, beta), k, alpha, budget, heap,
                 fine)
    else:
        only_list = len(view.segments) == 1 and not (view.buffer is not None and view.buffer.num_live)
        for state in view.segments:
            scaled = scale_query(merged_terms, merged_weights, state.segment.term_scales)
            docs, scores = segment_top_k(state.segment, merged_terms, scaled, k, state.live, fine)
            if only_list:  # one ranked list (score descending, id ascending) is the answer: no heap
                return docs + state.base, scores
            heap.offer(scores, docs, state.base)
    if view.buffer is not None and view.buffer.num_live:
        heap.offer_positive(view.buffer.sparse_scores(merged_terms, merged_weights, view.vocab_size), view.buffer_base)
    return heap.ranked()


def search_sparse_batch(view: View, queries: SparseBatch, k: int = 10, scorer: str = "auto", alpha: float = 1.0,
                        beta: float = 1.0, max_blocks: int | None = None, precision: str = "auto") -> SearchResults:
    """`search_sparse` for a batch, in parallel over queries; ``docs`` of the result are global keys."""
    k = _check_k(k)
    _check_alpha_beta(alpha, beta)
    budget = _block_budget(max_blocks)
    fine = view.fine(precision)
    merged = merge_batch(queries, view.vocab_size)
    n = len(merged)
    lengths = np.diff(merged.indptr)
    use_bmp = np.array([_use_bmp(view, int(m), scorer, alpha, beta, k, max_blocks) for m in lengths], dtype=bool)
    heaps = (np.zeros((n, k), dtype=np.float64), np.full((n, k), -1, dtype=np.int64), np.zeros(n, dtype=np.int64))
    budgets = np.full(n, budget, dtype=np.int64)
    bmp_rows, exhaustive_rows = np.flatnonzero(use_bmp), np.flatnonzero(~use_bmp)
    if len(bmp_rows):
        sub_heaps = tuple(np.ascontiguousarray(h[bmp_rows]) for h in heaps)
        sub_budgets = budgets[bmp_rows]
        bmp_into_batch(view.kernel_groups(), keep_top_terms_batch(_rows(merged, bmp_rows), beta), k, alpha,
                       sub_budgets, sub_heaps, fine)
        for h, sub_h in zip(heaps, sub_heaps):
            h[bmp_rows] = sub_h
    if len(exhaustive_rows):
        for state in view.segments:
            scaled = scale_batch(_rows(merged, exhaustive_rows), state.segment.term_scales)
            found = segment_top_k_batch(state.segment, scaled, k, state.live, fine)
            for i, q in enumerate(exhaustive_rows):
                _offer_row(heaps, q, k, *reversed(found.row(i)), state.base)
    if view.buffer is not None and view.buffer.num_live:
        all_scores, keys, sizes = heaps
        for q in range(n):
            scores = view.buffer.sparse_scores(*merged.row(q), view.vocab_size)
            sizes[q] = heap_offer_positive(all_scores[q], keys[q], sizes[q], k, scores, np.int64(view.buffer_base))
    return ranked_results(heaps)


def search_dense(view: View, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` live documents by inner product with a dense query vector (normalised by faiss's side).

    Returns:
        Global keys and float32 scores, best first, ties by key.
    """
    k = _check_k(k)
    heap = TopK(k)
    for state in view.segments:
        if state.dense is None:
            raise ValueError(f"segment {state.segment.name} has no dense part")
        live = state.live if len(state.live) else None
        docs, scores = state.dense.search(vector[None, :], k, live)
        found = docs[0] >= 0
        heap.offer(scores[0][found], docs[0][found], state.base)
    if view.buffer is not None and view.buffer.num_live:
        scores = view.buffer.dense_scores(_normalized(vector))
        rows = np.flatnonzero(view.buffer.live)
        heap.offer(scores[rows], rows, view.buffer_base)
    keys, scores = heap.ranked()
    return keys, scores.astype(np.float32)


def _normalized(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _use_bmp(view: View, num_terms: int, scorer: str, alpha: float, beta: float, k: int,
             max_blocks: int | None) -> bool:
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    if scorer == "auto":
        scorer = choose_scorer(view.num_docs, num_terms, alpha, beta, k, max_blocks)
    if scorer == "exhaustive" and (alpha < 1 or beta < 1 or max_blocks is not None):
        raise ValueError("the exhaustive scorer is exact: alpha and beta must be 1 and max_blocks None")
    return scorer == "bmp"


def _rows(batch: SparseBatch, rows: np.ndarray) -> SparseBatch:
    if len(rows) == len(batch):
        return batch
    return SparseBatch.from_scipy(batch.to_scipy()[rows])


def _offer_row(heaps, q: int, k: int, scores: np.ndarray, docs: np.ndarray, base: int) -> None:
    all_scores, keys, sizes = heaps
    sizes[q] = heap_offer_many(all_scores[q], keys[q], sizes[q], k, np.asarray(scores, np.float64),
                               np.asarray(docs, np.int64), np.int64(base))
