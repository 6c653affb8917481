"""Live changes on top of an immutable main index: an in-memory segment and tombstones.

Documents added after the build live in the segment (float sparse weights, optional dense
vector, title, text); deleting or replacing a document of the main index marks its internal
id with a tombstone. `LiveSegment.apply` takes the update-log records in log order, so every
process that replays the same log reaches the same state.

Searches read a `SegmentView`: an immutable snapshot (CSR matrix of the segment's weights, its
dense matrix, the tombstone list) rebuilt lazily after a change, so readers never hold a lock
while they score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class SegmentDocument:
    """A document added through the update log."""

    doc_id: str
    title: str
    text: str
    terms: np.ndarray  # (nnz,) uint32
    weights: np.ndarray  # (nnz,) float32
    dense: np.ndarray | None  # (dim,) float32, or None when the index has no dense part


@dataclass(frozen=True)
class SegmentView:
    """A snapshot of the live changes, safe to search without a lock."""

    doc_ids: list[str]
    weights: sp.csr_matrix  # (segment docs, vocab) float32
    dense: np.ndarray | None  # (segment docs, dim) float32
    tombstones: np.ndarray  # sorted int64 internal ids of main-index docs deleted or replaced

    def sparse_scores(self, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Float dot products of a query (raw encoder weights) with every segment document."""
        if not self.doc_ids or len(terms) == 0:
            return np.zeros(len(self.doc_ids), dtype=np.float32)
        query = np.zeros(self.weights.shape[1], dtype=np.float32)
        np.add.at(query, terms.astype(np.int64), weights.astype(np.float32))
        return np.asarray(self.weights @ query, dtype=np.float32)

    def dense_scores(self, vector: np.ndarray) -> np.ndarray:
        if self.dense is None or not self.doc_ids:
            return np.zeros(len(self.doc_ids), dtype=np.float32)
        return (self.dense @ vector.astype(np.float32)).astype(np.float32)


class LiveSegment:
    """Segment documents and main-index tombstones, applied from update records.

    Args:
        main_lookup: external id -> internal id of the main index (or None when absent).
        vocab_size: the sparse vocabulary.
        dense_dim: the dense dimension, or None when the index has no dense part.
    """

    def __init__(self, main_lookup, vocab_size: int, dense_dim: int | None) -> None:
        self._main_lookup = main_lookup
        self.vocab_size = vocab_size
        self.dense_dim = dense_dim
        self.documents: dict[str, SegmentDocument] = {}
        self.tombstones: set[int] = set()
        self.num_added = 0  # add records applied
        self.num_deleted = 0  # delete records that removed something
        self._view: SegmentView | None = None

    def contains(self, doc_id: str) -> bool:
        """Whether the id is live: in the segment, or in the main index and not tombstoned."""
        if doc_id in self.documents:
            return True
        internal = self._main_lookup(doc_id)
        return internal is not None and internal not in self.tombstones

    def apply(self, record: dict) -> None:
        """Apply one update-log record (``add`` or ``delete``)."""
        doc_id = record["id"]
        was_live = self.contains(doc_id)
        internal = self._main_lookup(doc_id)
        if internal is not None:
            self.tombstones.add(internal)  # a replaced main doc is shadowed by the segment copy
        if record["op"] == "add":
            self.documents.pop(doc_id, None)  # keep insertion order = order of the latest add
            self.documents[doc_id] = _document(record, self.vocab_size, self.dense_dim)
            self.num_added += 1
        else:
            self.documents.pop(doc_id, None)
            self.num_deleted += int(was_live)
        self._view = None

    def view(self) -> SegmentView:
        """The current snapshot (built on first use after a change)."""
        if self._view is None:
            self._view = self._build_view()
        return self._view

    def _build_view(self) -> SegmentView:
        docs = list(self.documents.values())
        lengths = np.array([len(d.terms) for d in docs], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        terms = np.concatenate([d.terms for d in docs]).astype(np.int64) if docs else np.zeros(0, np.int64)
        weights = np.concatenate([d.weights for d in docs]) if docs else np.zeros(0, np.float32)
        matrix = sp.csr_matrix((weights.astype(np.float32), terms, indptr), shape=(len(docs), self.vocab_size))
        matrix.sum_duplicates()
        dense = None
        if self.dense_dim is not None:
            dense = np.stack([d.dense for d in docs]) if docs else np.zeros((0, self.dense_dim), np.float32)
        return SegmentView([d.doc_id for d in docs], matrix, dense, np.array(sorted(self.tombstones), dtype=np.int64))


def _document(record: dict, vocab_size: int, dense_dim: int | None) -> SegmentDocument:
    terms = np.asarray(record.get("terms", []), dtype=np.int64)
    weights = np.asarray(record.get("weights", []), dtype=np.float32)
    if terms.shape != weights.shape or (terms.size and (terms.min() < 0 or terms.max() >= vocab_size)):
        raise ValueError(f"record for {record['id']!r}: terms must be ids below {vocab_size}, one weight each")
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise ValueError(f"record for {record['id']!r}: weights must be finite and non-negative")
    dense = None
    if dense_dim is not None:
        dense = np.asarray(record.get("dense") or [], dtype=np.float32)
        if dense.shape != (dense_dim,):
            raise ValueError(f"record for {record['id']!r}: a dense vector of {dense_dim} values is required")
    return SegmentDocument(record["id"], record.get("title", ""), record.get("text", ""),
                           terms.astype(np.uint32), weights, dense)
