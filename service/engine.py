"""`SearchEngine`: what the endpoints call. Encoders, the live index and faiss, loaded once.

Requests arrive as validated schema objects; the engine encodes, searches, fuses and times
each stage, and raises domain errors (`service.errors`) that the app maps to status codes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from lsr.index.fusion import fuse
from lsr.index.live import DocumentNotFound, LiveIndex
from lsr.index.sharded import open_index
from lsr.service.errors import ModeUnavailable, PayloadTooLarge
from lsr.service.maintenance import Maintenance
from lsr.service.schemas import Document, SearchRequest
from lsr.service.settings import Settings


WITH_DOCUMENTS_MAX_K = 100


class SearchEngine:
    """The index and encoders one service process answers with.

    Args:
        settings: the service's settings.
        index: what to search (default: ``settings.index_dir`` opened here, one index or every
            shard of a sharded one); anything with `index.live.LiveIndex`'s methods.
        encoders: the query and document encoders (default: `service.encoders.LocalEncoders`
            of the index).
    """

    def __init__(self, settings: Settings, index=None, encoders=None) -> None:
        self.settings = settings
        self.index = index if index is not None else open_index(settings.index_dir, writer="auto")
        try:  # a precision the index cannot serve is an error now, not a 5xx on every search
            self.index.search_sparse(np.array([0], np.uint32), np.array([1.0], np.float32), 1,
                                     precision=settings.precision)
        except ValueError:
            if index is None:
                self.index.close()
            raise
        self.index.flush_policy.max_docs = settings.flush_docs
        self.index.flush_policy.max_seconds = settings.flush_seconds
        if encoders is None:
            from lsr.service.encoders import LocalEncoders

            encoders = LocalEncoders(self.index.settings, settings.device, settings.torch_threads,
                                     settings.query_backend)
        self.encoders = encoders
        self._tokens = encoders.tokens()
        self._maintenance = Maintenance(self.index, settings.flush_check_seconds, settings.merge_check_seconds)

    def start_maintenance(self) -> None:
        """Background threads: flush the write buffer when it is due (taking the write role
        when it is free) and merge segments as the merge policy says."""
        self._maintenance.start()

    def close(self) -> None:
        self._maintenance.stop()
        self.index.close()

    def warm_up(self) -> None:
        """Compile (or load from cache) the Numba kernels where the index is searched, then run
        one real query per mode, so the first request pays no JIT or lazy-load cost."""
        if not getattr(self.index, "remote", False):  # shards on Ray warm up in their replicas
            warm_kernels()
        for mode in ("sparse", "dense", "hybrid") if self.encoders.has_dense else ("sparse",):
            self.search(SearchRequest(query="warm up", mode=mode, highlight=True))

    # searching

    def encode_sparse(self, query: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Query terms, raw weights and whether the query was cut to the encoder's token limit."""
        return self.encoders.encode_sparse(query)

    def _check_query(self, query: str) -> None:
        if len(query) > self.settings.max_query_chars:
            raise PayloadTooLarge(f"query has {len(query)} characters; the limit is {self.settings.max_query_chars}")

    def search(self, request: SearchRequest) -> dict:
        started = time.perf_counter()
        timings = {}
        truncated, query_terms = False, 0
        sparse_hits = dense_hits = sparse_query = None
        depth = request.k if request.mode != "hybrid" else max(request.k, self.settings.fusion_depth)
        if request.mode in ("dense", "hybrid") and not self.encoders.has_dense:
            raise ModeUnavailable(f"{request.mode} search needs a dense index; build one with `lsr index ... --dense`")
        self._check_query(request.query)
        # Shards on Ray may be unavailable: with allow_partial the others answer (and the
        # missing ones are listed) instead of a 503.
        remote = getattr(self.index, "remote", False)
        missing: list[str] | None = [] if request.allow_partial and remote else None
        remote_options = {"missing": missing} if missing is not None else {}
        # The shards send their hits' documents with them (one round less), unless each would
        # send many that the merge drops (large k) or fusion reorders (hybrid).
        if remote and request.mode != "hybrid" and request.k <= WITH_DOCUMENTS_MAX_K:
            remote_options["with_documents"] = request.k
        if request.mode in ("sparse", "hybrid"):
            t0 = time.perf_counter()
            terms, weights, truncated = self.encode_sparse(request.query)
            sparse_query = (terms, weights)
            t1 = time.perf_counter()
            sparse_hits = self.index.search_sparse(terms, weights, depth, self.settings.scorer, request.alpha, request.beta,
                                                   precision=self.settings.precision, **remote_options)
            timings.update(sparse_encode_ms=(t1 - t0) * 1000, sparse_search_ms=(time.perf_counter() - t1) * 1000)
            query_terms = len(terms)
        if request.mode in ("dense", "hybrid"):
            t0 = time.perf_counter()
            vector, dense_truncated = self.encoders.encode_dense(request.query)
            t1 = time.perf_counter()
            dense_hits = self.index.search_dense(vector, depth, **remote_options)
            timings.update(dense_encode_ms=(t1 - t0) * 1000, dense_search_ms=(time.perf_counter() - t1) * 1000)
            if request.mode == "dense":
                truncated = dense_truncated
        hits = sparse_hits if dense_hits is None else dense_hits
        if request.mode == "hybrid":
            t0 = time.perf_counter()
            hits = fuse(sparse_hits, dense_hits, request.fusion, rrf_k=request.rrf_k, alpha=request.fusion_weight,
                        normalization=request.normalization, limit=request.k)
            timings["fusion_ms"] = (time.perf_counter() - t0) * 1000
        if request.highlight and sparse_query is None:
            sparse_query = self.encode_sparse(request.query)[:2]
        out_hits = self._hits(hits, request, sparse_query, getattr(hits, "documents", {}))
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        return {"query": request.query, "mode": request.mode, "k": request.k, "truncated": truncated,
                "query_terms": query_terms, "hits": out_hits, "timings": timings, "partial": bool(missing),
                "missing_shards": sorted(set(missing or []))}

    def _hits(self, hits, request: SearchRequest, sparse_query, known: dict) -> list[dict]:
        ids, scores = hits
        unknown = [doc_id for doc_id in ids if doc_id not in known]
        documents = {**known, **self.index.documents(unknown)} if unknown else known
        out = []
        for doc_id, score in zip(ids, scores):
            document = documents.get(doc_id)
            if document is None:  # deleted by a concurrent request since the search
                continue
            hit = {"id": doc_id, "score": float(score), "title": document["title"]}
            if request.include_text:
                hit["text"] = document["text"]
            if request.highlight:
                try:
                    hit["matched_terms"] = [t["token"] for t in self._contributions(*sparse_query, doc_id)]
                except DocumentNotFound:  # deleted in the meantime
                    continue
            out.append(hit)
        return out

    def explain(self, query: str, doc_id: str) -> dict:
        """The terms a document shares with the sparse query, with their score contributions.

        Contributions are computed as the scorer does: in a segment the query weight times the
        term's quantisation scale (the segment's) times the impact the search scores (uint8, or
        uint16 over 256 at 16-bit precision); for a write not yet flushed the query weight times
        the float document weight. They sum to the document's sparse score.
        """
        self._check_query(query)
        terms, weights, truncated = self.encode_sparse(query)
        rows = self._contributions(terms, weights, doc_id)
        return {"id": doc_id, "query": query, "score": float(sum(r["contribution"] for r in rows)),
                "truncated": truncated, "terms": rows}

    def _contributions(self, terms: np.ndarray, weights: np.ndarray, doc_id: str) -> list[dict]:
        """Shared terms of a query vector and a document, best contribution first."""
        doc_terms, doc_weights, impacts, scales = self.index.document_vector(doc_id, self.settings.precision)
        common, q_pos, d_pos = np.intersect1d(terms.astype(np.int64), doc_terms.astype(np.int64),
                                              assume_unique=True, return_indices=True)
        rows = []
        for term, qi, di in zip(common, q_pos, d_pos):
            query_weight = np.float32(weights[qi])
            if impacts is not None:
                contribution = float(np.float32(query_weight * scales[di]) * np.float64(impacts[di]))
            else:
                contribution = float(np.float64(query_weight) * np.float64(doc_weights[di]))
            rows.append({"term_id": int(term), "token": self._tokens[term], "query_weight": float(query_weight),
                         "document_weight": float(doc_weights[di]),
                         "impact": None if impacts is None else int(impacts[di]), "contribution": contribution})
        rows.sort(key=lambda row: -row["contribution"])
        return rows

    # writing

    def add(self, document: Document) -> dict:
        if len(document.text) > self.settings.max_document_chars:
            raise PayloadTooLarge(f"document text has {len(document.text)} characters; the limit is "
                                  f"{self.settings.max_document_chars}")
        full_text = f"{document.title} {document.text}".strip()
        terms, weights, dense = self.encoders.encode_document(full_text)
        replaced = self.index.add(document.id, document.title, document.text, terms, weights, dense)
        return {"id": document.id, "status": "replaced" if replaced else "added"}

    def delete(self, doc_id: str) -> dict:
        self.index.delete(doc_id)
        return {"id": doc_id, "status": "deleted"}


def warm_kernels() -> None:
    """Compile (or load from cache) every Numba kernel of a search on a tiny valid index."""
    from lsr.index.build import build_index
    from lsr.index.sparse_batch import SparseBatch

    with tempfile.TemporaryDirectory() as tmp:
        batch = SparseBatch.from_dicts([{0: 1.0, 1: 0.5}, {1: 2.0}, {2: 1.0}], 3)
        with LiveIndex(build_index(Path(tmp) / "tiny", [(["a", "b", "c"], batch, None)], 3,
                                   reorder="bp", block_size=2)) as tiny:
            tiny.add("d", "", "", np.array([1]), np.array([1.0], np.float32))
            for scorer in ("exhaustive", "bmp"):
                tiny.search_sparse(np.array([1], np.uint32), np.array([1.0], np.float32), 2, scorer)
            tiny.flush()
            tiny.search_sparse(np.array([1], np.uint32), np.array([1.0], np.float32), 2, "bmp")
