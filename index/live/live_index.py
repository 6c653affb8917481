"""`LiveIndex`: an index directory searched together with its live changes.

The main index (sparse arrays and the optional faiss part) is immutable and memory-mapped;
documents added or deleted since the build come from the update log (`index.live.log`) into a
`LiveSegment`. A search asks the main index for ``k`` plus the number of tombstones results
(so that dropping the deleted ones still leaves the true top ``k``), scores the segment
exactly, and merges. Thread-safe: state changes hold one lock, searches work on snapshots.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from index.dense import DenseIndex, has_dense_index
from index.format import SparseIndex
from index.forward import document_impacts
from index.live.log import UpdateLog
from index.live.segment import LiveSegment, SegmentDocument, SegmentView
from index.scorers.planner import search as sparse_search

Hits = tuple[list[str], np.ndarray]  # external ids, scores; best first


class DocumentNotFound(KeyError):
    """No live document has this id."""

    def __init__(self, doc_id: str) -> None:
        super().__init__(doc_id)
        self.doc_id = doc_id

    def __str__(self) -> str:
        return f"no document with id {self.doc_id!r}"


class LiveIndex:
    """The main index plus its update log.

    Args:
        directory: an index directory (written by `lsr index`); the update log is created
            there on first use.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.main = SparseIndex.open(self.directory)
        self.dense = DenseIndex.open(self.directory, self.main.num_docs) if has_dense_index(self.directory) else None
        self._internal_ids: dict[str, int] | None = None
        self._lock = threading.Lock()
        self.segment = LiveSegment(self.internal_id, self.main.vocab_size, self.dense.dim if self.dense else None)
        self.log = UpdateLog(self.directory)
        self.refresh()

    # reading

    def internal_id(self, doc_id: str) -> int | None:
        """The main-index internal id of an external id (None if the main index lacks it)."""
        if self._internal_ids is None:
            self._internal_ids = self.main.internal_ids()
        return self._internal_ids.get(doc_id)

    def refresh(self) -> None:
        """Apply the records other processes appended since the last look (one stat call if none)."""
        if not self.log.has_new():
            return
        with self._lock:
            for record in self.log.read_new():
                self.segment.apply(record)

    def view(self) -> SegmentView:
        self.refresh()
        with self._lock:
            return self.segment.view()

    @property
    def num_docs(self) -> int:
        return self._live_count(self.view())

    def _live_count(self, view: SegmentView) -> int:
        return self.main.num_docs - len(view.tombstones) + len(view.doc_ids)

    def search_sparse(self, terms: np.ndarray, weights: np.ndarray, k: int, scorer: str = "auto",
                      alpha: float = 1.0, beta: float = 1.0, max_blocks: int | None = None) -> Hits:
        """Top ``k`` live documents for a query vector (raw encoder weights)."""
        view = self.view()
        k_main = min(self.main.num_docs, k + len(view.tombstones))
        docs, scores = sparse_search(self.main, terms, weights, k_main, scorer, alpha, beta, max_blocks) \
            if k_main > 0 else (np.zeros(0, np.int64), np.zeros(0, np.float32))
        return _merge(self.main, view, docs, scores, view.sparse_scores(np.asarray(terms), np.asarray(weights)), k)

    def search_dense(self, vector: np.ndarray, k: int) -> Hits:
        """Top ``k`` live documents by inner product with a (normalised) dense query vector."""
        if self.dense is None:
            raise ValueError(f"{self.directory} has no dense index; build it with `lsr index ... --dense`")
        view = self.view()
        docs, scores = self.dense.search(vector[None, :], min(self.dense.num_docs, k + len(view.tombstones)))
        found = docs[0] >= 0
        return _merge(self.main, view, docs[0][found], scores[0][found], view.dense_scores(vector), k,
                      positive_only=False)

    def document(self, doc_id: str) -> dict:
        """``{"id", "title", "text", "segment"}`` of a live document."""
        return self._describe(doc_id, self._locate(self.view(), doc_id))

    def documents(self, doc_ids: list[str]) -> dict[str, dict]:
        """`document` of each live id among ``doc_ids`` (one look at the log for all of them);
        ids no longer live are left out."""
        view = self.view()
        found = {}
        for doc_id in doc_ids:
            try:
                found[doc_id] = self._describe(doc_id, self._locate(view, doc_id))
            except DocumentNotFound:
                continue
        return found

    def document_vector(self, doc_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A live document's terms, float weights and (main index only) uint8 impacts."""
        located = self._locate(self.view(), doc_id)
        if isinstance(located, SegmentDocument):
            return located.terms, located.weights, None
        terms, impacts = document_impacts(self.main, located)
        return terms, impacts.astype(np.float32) * self.main.term_scales[terms], impacts

    def _locate(self, view: SegmentView, doc_id: str) -> SegmentDocument | int:
        """A live document: its segment copy, or its internal id in the main index."""
        with self._lock:
            document = self.segment.documents.get(doc_id)
        if document is not None:
            return document
        internal = self.internal_id(doc_id)
        if internal is None or _contains(view.tombstones, internal):
            raise DocumentNotFound(doc_id)
        return internal

    def _describe(self, doc_id: str, located: SegmentDocument | int) -> dict:
        if isinstance(located, SegmentDocument):
            return {"id": doc_id, "title": located.title, "text": located.text, "segment": "live"}
        texts = self.main.doc_texts
        return {"id": doc_id, "title": self.main.doc_titles[located],
                "text": texts[located] if texts is not None else "", "segment": "main"}

    # writing

    def add(self, doc_id: str, title: str, text: str, terms: np.ndarray, weights: np.ndarray,
            dense: np.ndarray | None = None) -> bool:
        """Add or replace a document durably. Returns True if it replaced a live one."""
        if (dense is None) != (self.dense is None):
            raise ValueError("a dense vector is required exactly when the index has a dense part")
        replaced = self.contains(doc_id)
        record = {"op": "add", "id": doc_id, "title": title, "text": text, "time": time.time(),
                  "terms": np.asarray(terms).astype(np.int64).tolist(),
                  "weights": np.asarray(weights, dtype=np.float32).tolist(),
                  "dense": None if dense is None else np.asarray(dense, dtype=np.float32).tolist()}
        self.log.append(record)
        self.refresh()
        return replaced

    def delete(self, doc_id: str) -> None:
        """Delete a live document durably (`DocumentNotFound` if there is none)."""
        if not self.contains(doc_id):
            raise DocumentNotFound(doc_id)
        self.log.append({"op": "delete", "id": doc_id, "time": time.time()})
        self.refresh()

    def contains(self, doc_id: str) -> bool:
        self.refresh()
        with self._lock:
            return self.segment.contains(doc_id)

    def stats(self) -> dict:
        view = self.view()
        meta = self.main.meta
        return {
            "documents": self._live_count(view),
            "main_documents": self.main.num_docs,
            "segment_documents": len(view.doc_ids),
            "tombstones": len(view.tombstones),
            "postings": int(meta["num_postings"]),
            "segment_postings": int(view.weights.nnz),
            "vocab_size": self.main.vocab_size,
            "format_version": meta["format_version"],
            "encoder": meta.get("encoder", {}),
            "dense": None if self.dense is None else {k: self.dense.meta[k] for k in ("model", "dim", "kind")},
            "quantization": meta["quantization"]["method"],
            "block_size": meta["block_size"],
            "doc_order": meta["doc_order"],
        }


def _contains(sorted_ids: np.ndarray, value: int) -> bool:
    position = np.searchsorted(sorted_ids, value)
    return bool(position < len(sorted_ids) and sorted_ids[position] == value)


def _merge(main: SparseIndex, view: SegmentView, docs: np.ndarray, scores: np.ndarray,
           segment_scores: np.ndarray, k: int, positive_only: bool = True) -> Hits:
    """Main-index hits minus tombstones, plus segment hits (sparse: those sharing a term with
    the query, a positive score), top ``k``."""
    docs = np.asarray(docs, dtype=np.int64)
    keep = ~np.isin(docs, view.tombstones)
    main_ids = [main.doc_ids[int(d)] for d in docs[keep]]
    main_scores = np.asarray(scores, dtype=np.float32)[keep]
    hits = np.flatnonzero(segment_scores > 0) if positive_only else np.arange(len(segment_scores))
    ids = main_ids + [view.doc_ids[i] for i in hits]
    all_scores = np.concatenate([main_scores, segment_scores[hits].astype(np.float32)])
    order = np.argsort(-all_scores, kind="stable")[:k]
    return [ids[i] for i in order], all_scores[order]
