"""Retrieval evaluation of an encoder over an index: the one code path of `lsr eval beir`
and of the dev evaluation during training.

Efficiency figures beside the metrics: mean active dimensions of queries and documents,
FLOPS per query (the expected number of postings a query touches, ``sum_{t in q} df_t``),
query encoding time and single-thread search latency.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from index.format import SparseIndex
from index.scorers.planner import search, search_batch
from index.sparse_batch import SparseBatch
from lsr.metrics import evaluate

Run = dict[str, dict[str, float]]


def posting_list_lengths(index: SparseIndex) -> np.ndarray:
    """Document frequency of every term: ``(vocab,)`` int64."""
    b = index.postings
    return np.diff(b.term_entry_starts[b.term_entry_offsets].astype(np.int64))


def flops_per_query(index: SparseIndex, queries: SparseBatch) -> float:
    """Mean over queries of the postings their terms touch."""
    if len(queries) == 0:
        return 0.0
    df = posting_list_lengths(index)
    return float(df[queries.indices.astype(np.int64)].sum() / len(queries))


def retrieve(encoder, index: SparseIndex, queries: dict[str, str], k: int, scorer: str = "auto"
             ) -> tuple[Run, SparseBatch, float]:
    """Encode and search every query.

    Returns:
        The run ``{query_id: {doc_id: score}}``, the query vectors (in ``queries`` order) and
        the mean query encoding time in ms.
    """
    query_ids = list(queries)
    started = time.perf_counter()
    vectors = encoder.encode_queries([queries[q] for q in query_ids])
    encode_ms = (time.perf_counter() - started) * 1000 / max(1, len(query_ids))
    results = search_batch(index, vectors, k, scorer)
    run: Run = {}
    for row, qid in enumerate(query_ids):
        docs, scores = results.row(row)
        run[qid] = {index.doc_ids[d]: float(s) for d, s in zip(docs, scores)}
    return run, vectors, encode_ms


def search_latencies_ms(index: SparseIndex, vectors: SparseBatch, k: int, scorer: str = "auto") -> np.ndarray:
    """Search latency of each query alone, one thread, after one warm-up query."""
    if len(vectors) == 0:
        return np.zeros(0)
    search(index, *vectors.row(0), k, scorer)
    latencies = np.empty(len(vectors))
    for q in range(len(vectors)):
        started = time.perf_counter()
        search(index, *vectors.row(q), k, scorer)
        latencies[q] = (time.perf_counter() - started) * 1000
    return latencies


def efficiency(index: SparseIndex, vectors: SparseBatch, encode_ms: float, latencies: np.ndarray) -> dict:
    meta = index.meta
    return {
        "mean_doc_nnz": meta["mean_doc_nnz"],
        "mean_query_nnz": vectors.nnz / max(1, len(vectors)),
        "flops_per_query": flops_per_query(index, vectors),
        "index_mb": index.size_bytes() / 2**20,
        "encode_seconds": meta.get("encode_seconds"),
        "mean_query_encode_ms": encode_ms,
        "mean_search_ms": float(np.mean(latencies)) if len(latencies) else 0.0,
        "p50_search_ms": float(np.percentile(latencies, 50)) if len(latencies) else 0.0,
        "p99_search_ms": float(np.percentile(latencies, 99)) if len(latencies) else 0.0,
    }


def evaluate_index(encoder, index_dir: str | Path, queries: dict[str, str], qrels: dict, k: int,
                   scorer: str = "auto") -> dict:
    """Metrics and efficiency of ``encoder`` over an index built with it."""
    index = SparseIndex.open(index_dir, vocab_size=encoder.vocab_size)
    run, vectors, encode_ms = retrieve(encoder, index, queries, k, scorer)
    latencies = search_latencies_ms(index, vectors, k, scorer)
    return {"metrics": evaluate(run, qrels), "efficiency": efficiency(index, vectors, encode_ms, latencies),
            "run": run, "query_vectors": vectors}
