"""Merging segments: which to merge (a tiered policy) and how (a new segment, then a commit).

The policy follows Lucene's TieredMergePolicy in spirit: segments are grouped in tiers of
sizes growing by ``max_merge_at_once``; an index may hold ``segments_per_tier`` segments per
tier, and when it holds more, the cheapest merge of up to ``max_merge_at_once`` segments of
similar size is chosen (score: the largest segment's share of the merge, lower is better,
times a small penalty for the merge's size, times the share of live documents squared, so
merges that expunge deletions are preferred). Segments above half ``max_merged_docs`` are
left alone unless more than ``deletes_pct_allowed`` percent of them is deleted.

A merge reads the live documents of its sources block range by block range (impacts
dequantised with each source's scales and quantised again with the merged segment's, which
keeps them exact for the source whose scale is the largest), builds the merged segment
without any lock, then commits it in place of its sources. Up to `REORDER_MAX_DOCS` live
documents the merged documents are reordered (graph bisection), except in the policy's own
merges of fewer than ``reorder_min_docs`` (small young segments, soon merged again); beyond,
each source keeps its order and the merged segment streams to disk in bounded memory
(``index.concat_builder``). Deletions committed on a source while the merge ran are carried
over to the merged segment through the map from (source, internal id) to merged id;
deletions still in the log resolve by id against the new commit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.index.commit import Commit, SegmentRecord
from lsr.index.deletes import read_deletes
from lsr.index.npy_stream import NpyReader
from lsr.index.forward import block_range_impacts
from lsr.index.postings_view import has_fine_impacts
from lsr.index.sparse_batch import SparseBatch

BLOCKS_PER_STEP = 512
# Merges up to this many live documents reorder them (graph bisection, whose memory grows with
# the merge); larger ones keep their sources' orders and stream (``index.concat_builder``).
REORDER_MAX_DOCS = 250_000


@dataclass
class TieredMergePolicy:
    """Which segments to merge (see the module docstring)."""

    # Fewer segments per tier than Lucene's 10 and a higher floor: each segment costs a search a
    # few microseconds per query term (bounds, seeds), about 1% of a 1 ms query, and flushed
    # segments are small (``eval/bench_writes.py``: search beside 1,000 adds a second).
    segments_per_tier: int = 4
    max_merge_at_once: int = 10
    floor_docs: int = 20_000
    max_merged_docs: int = 5_000_000
    deletes_pct_allowed: float = 33.0
    # Its merges of fewer live documents keep their sources' orders: like a flushed segment, a
    # small merged one is soon merged again, and graph bisection was most of its cost (ten
    # flushed segments of 1,000 documents of the 1M benchmark collection: 2.4 of 2.9 s). The
    # merge that first makes a segment of this size reorders all of its documents.
    reorder_min_docs: int = 20_000

    def concatenates(self, segments: list[SegmentRecord]) -> bool:
        """Whether its merge of ``segments`` keeps their document orders (`merge`'s ``concatenate``)."""
        return not self.reorder_min_docs <= sum(s.num_live for s in segments) <= REORDER_MAX_DOCS

    def find_merge(self, segments: tuple[SegmentRecord, ...]) -> list[str] | None:
        """Names of the segments to merge next, or None when the index is in shape."""
        eligible = [s for s in segments if s.num_live * 2 <= self.max_merged_docs or self._too_deleted(s)]
        if len(eligible) < 2 and not any(self._too_deleted(s) for s in eligible):
            return None
        if len(segments) <= self._allowed_segments(segments) and not any(self._too_deleted(s) for s in eligible):
            return None
        ordered = sorted(eligible, key=lambda s: -self._size(s))
        best, best_score = None, math.inf
        for start in range(len(ordered)):
            window, total = [], 0
            for record in ordered[start : start + self.max_merge_at_once]:
                if total + record.num_live > self.max_merged_docs and window:
                    break
                window.append(record)
                total += record.num_live
            if len(window) < 2 and not (window and self._too_deleted(window[0])):
                continue
            score = self._score(window)
            if score < best_score:
                best, best_score = window, score
        return [s.name for s in best] if best else None

    def _size(self, record: SegmentRecord) -> int:
        return max(record.num_live, self.floor_docs)

    def _too_deleted(self, record: SegmentRecord) -> bool:
        return record.num_docs > 0 and 100.0 * record.num_deleted / record.num_docs > self.deletes_pct_allowed

    def _allowed_segments(self, segments: tuple[SegmentRecord, ...]) -> int:
        """How many segments an index of this size may hold (Lucene's tier budget)."""
        remaining = sum(self._size(s) for s in segments)
        level = min((self._size(s) for s in segments), default=self.floor_docs)
        allowed = 0
        while True:
            count = remaining / level
            if count < self.segments_per_tier:
                return allowed + math.ceil(count)
            allowed += self.segments_per_tier
            remaining -= self.segments_per_tier * level
            level *= self.max_merge_at_once

    def _score(self, window: list[SegmentRecord]) -> float:
        sizes = [self._size(s) for s in window]
        total = sum(sizes)
        skew = max(sizes) / total if len(window) > 1 else 1.0 / self.max_merge_at_once
        live = sum(s.num_live for s in window) / max(1, sum(s.num_docs for s in window))
        return skew * total ** 0.05 * live ** 2


def merge(writer, names: list[str], floats: dict[str, Path] | None = None,
          float_vectors_dir: Path | None = None, concatenate: bool | None = None) -> Commit:
    """Merge the named segments of ``writer``'s index into one and commit it.

    Args:
        writer: the index's `index.writer.IndexWriter`.
        names: segments of its current commit, at least one.
        floats: per segment, a directory of its float doc vectors in its doc order (an indexing
            job keeps them): read instead of the dequantised impacts.
        float_vectors_dir: keep the merged segment's float vectors there.
        concatenate: keep the sources' document orders (streaming, bounded memory) instead of
            reordering the merged documents; by default when they are more than `REORDER_MAX_DOCS`.

    Returns:
        The commit that replaced them.
    """
    base = writer.commit
    sources = [base.segment(name) for name in names]
    deleted_at_start = [read_deletes(writer.directory, s.deletes, s.num_docs) for s in sources]
    floats = floats or {}
    if concatenate is None:
        concatenate = sum(s.num_live for s in sources) > REORDER_MAX_DOCS
    scan = None
    if concatenate:  # a first pass finds the merged segment's quantisation scales
        from lsr.index.concat_builder import TermMaxScan

        scan = TermMaxScan(writer.settings["vocab_size"])
        for record, deleted in zip(sources, deleted_at_start):
            _add_live_documents(writer, record, deleted, scan, floats.get(record.name))
    builder = writer.new_segment(scan=scan, float_vectors_dir=float_vectors_dir)
    try:
        origins = [_add_live_documents(writer, record, deleted, builder, floats.get(record.name))
                   for record, deleted in zip(sources, deleted_at_start)]
        builder.finish()
    except BaseException:
        writer.abandon(builder)
        raise
    # merged id of (source, internal id), -1 for a doc deleted before the merge
    merged_ids = [np.full(s.num_docs, -1, dtype=np.int64) for s in sources]
    source_of = np.concatenate([np.full(len(o), i, dtype=np.int64) for i, o in enumerate(origins)] or [np.empty(0, np.int64)])
    local_of = np.concatenate(origins or [np.empty(0, np.int64)])
    order = builder.order
    for i in range(len(sources)):
        chosen = np.flatnonzero(source_of[order] == i)
        merged_ids[i][local_of[order[chosen]]] = chosen
    return writer.commit_merge(names, builder.out_dir.name, deleted_at_start, merged_ids, len(order))


def _add_live_documents(writer, record: SegmentRecord, deleted: np.ndarray, builder,
                        floats: Path | None = None) -> np.ndarray:
    """Feed a source's live documents to the builder; returns their internal ids, in input order."""
    segment = writer.open_segment(record)
    dense = segment.dense if builder.dense is not None else None
    num_blocks, block_size = segment.postings.num_blocks, segment.postings.block_size
    vectors_of = _float_rows(floats, segment.vocab_size) if floats is not None else None
    has_fine = has_fine_impacts(segment.postings)
    added = []
    for first in range(0, num_blocks, BLOCKS_PER_STEP):
        end = min(first + BLOCKS_PER_STEP, num_blocks)
        first_doc = first * block_size
        end_doc = min(end * block_size, segment.num_docs)
        docs = np.arange(first_doc, end_doc)
        keep = ~deleted[docs]
        kept = docs[keep]
        if not len(kept):
            continue
        if vectors_of is not None:
            rows = vectors_of(first_doc, end_doc)[np.flatnonzero(keep)]
        else:
            # The 16-bit impacts where the source has them: a merge quantises once more, from
            # the finest weights it has.
            rows = block_range_impacts(segment, first, end, fine=has_fine)[np.flatnonzero(keep)]
            rows.data = rows.data * segment.term_scales[rows.indices]
        texts = None
        if builder.store_texts:
            texts = [segment.doc_texts[int(d)] if segment.doc_texts is not None else "" for d in kept]
        vectors = dense.vectors(first_doc, end_doc)[keep] if dense is not None else None
        builder.add([segment.doc_ids[int(d)] for d in kept], SparseBatch.from_scipy(rows),
                    [segment.doc_titles[int(d)] for d in kept], texts=texts, dense=vectors)
        added.append(kept)
    return np.concatenate(added) if added else np.zeros(0, dtype=np.int64)


def _float_rows(directory: Path, vocab_size: int):
    """A reader of rows ``[start, end)`` of a float doc-vector directory (CSR; plain reads, so a
    merge streaming through them keeps no pages of them resident)."""
    indptr = np.load(directory / "indptr.npy")
    indices, values = NpyReader(directory / "indices.npy"), NpyReader(directory / "values.npy")

    def rows(start: int, end: int) -> sp.csr_matrix:
        a, b = int(indptr[start]), int(indptr[end])
        return sp.csr_matrix((values.read(a, b), indices.read(a, b), indptr[start : end + 1] - a),
                             shape=(end - start, vocab_size))

    return rows
