"""Retrieval evaluation of an encoder over an index: the one code path of `lsr eval beir`
and of the dev evaluation during training.

Efficiency figures beside the metrics: mean active dimensions of queries and documents,
FLOPS per query (the expected number of postings a query touches, ``sum_{t in q} df_t``),
query encoding time (one query at a time, as a service sees it, and batched) and single-thread
search latency.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lsr.index.live import LiveIndex
from lsr.index.sparse_batch import SparseBatch
from lsr.metrics import evaluate

Run = dict[str, dict[str, float]]


def posting_list_lengths(index: LiveIndex) -> np.ndarray:
    """Document frequency of every term over all segments (deleted documents included): ``(vocab,)`` int64."""
    df = np.zeros(index.vocab_size, dtype=np.int64)
    for state in index.refresh().segments:
        df += state.segment.postings.postings_per_term()
    return df


def flops_per_query(index: LiveIndex, queries: SparseBatch) -> float:
    """Mean over queries of the postings their terms touch."""
    if len(queries) == 0:
        return 0.0
    df = posting_list_lengths(index)
    return float(df[queries.indices.astype(np.int64)].sum() / len(queries))


def retrieve(encoder, index: LiveIndex, queries: dict[str, str], k: int, scorer: str = "auto"
             ) -> tuple[Run, SparseBatch, float]:
    """Encode and search every query.

    Returns:
        The run ``{query_id: {doc_id: score}}``, the query vectors (in ``queries`` order) and
        the mean query encoding time in ms (queries encoded in one batch, time divided).
    """
    query_ids = list(queries)
    started = time.perf_counter()
    vectors = encoder.encode_queries([queries[q] for q in query_ids])
    encode_ms = (time.perf_counter() - started) * 1000 / max(1, len(query_ids))
    run: Run = {}
    for qid, (ids, scores) in zip(query_ids, index.search_sparse_batch(vectors, k, scorer)):
        run[qid] = {doc_id: float(s) for doc_id, s in zip(ids, scores)}
    return run, vectors, encode_ms


ENCODE_SAMPLE = 500  # queries encoded one at a time for the latency figures (the first ones, in order)


def encode_latencies_ms(encode, texts: list[str], sample: int = ENCODE_SAMPLE) -> np.ndarray:
    """Time of ``encode([text])`` for each of the first ``sample`` texts alone (a batch of one, as
    a service encodes a query), after one warm-up call."""
    texts = list(texts)[:sample]
    if not texts:
        return np.zeros(0)
    encode(texts[:1])
    latencies = np.empty(len(texts))
    for i, text in enumerate(texts):
        started = time.perf_counter()
        encode([text])
        latencies[i] = (time.perf_counter() - started) * 1000
    return latencies


def encode_figures(batched_ms: float, one_at_a_time_ms: np.ndarray) -> dict:
    """The efficiency fields of query encoding: ``mean``/``p50`` one query at a time, ``batched``
    (every query in batches, total time divided by the number of queries)."""
    return {"mean_query_encode_ms": float(np.mean(one_at_a_time_ms)) if len(one_at_a_time_ms) else 0.0,
            "p50_query_encode_ms": float(np.percentile(one_at_a_time_ms, 50)) if len(one_at_a_time_ms) else 0.0,
            "batched_query_encode_ms": batched_ms}


def search_latencies_ms(index: LiveIndex, vectors: SparseBatch, k: int, scorer: str = "auto") -> np.ndarray:
    """Search latency of each query alone, one thread, after one warm-up query."""
    if len(vectors) == 0:
        return np.zeros(0)
    index.search_sparse(*vectors.row(0), k, scorer)
    latencies = np.empty(len(vectors))
    for q in range(len(vectors)):
        started = time.perf_counter()
        index.search_sparse(*vectors.row(q), k, scorer)
        latencies[q] = (time.perf_counter() - started) * 1000
    return latencies


def efficiency(index: LiveIndex, vectors: SparseBatch, encode: dict, latencies: np.ndarray) -> dict:
    """``encode``: `encode_figures`."""
    segments = [state.segment for state in index.refresh().segments]
    num_docs = sum(s.num_docs for s in segments)
    return {
        "mean_doc_nnz": sum(s.meta["mean_doc_nnz"] * s.num_docs for s in segments) / max(1, num_docs),
        "mean_query_nnz": vectors.nnz / max(1, len(vectors)),
        "flops_per_query": flops_per_query(index, vectors),
        "index_mb": sparse_size_bytes(index) / 2**20,
        "segments": len(segments),
        "encode_seconds": index.meta.get("encode_seconds"),
        **encode,
        "mean_search_ms": float(np.mean(latencies)) if len(latencies) else 0.0,
        "p50_search_ms": float(np.percentile(latencies, 50)) if len(latencies) else 0.0,
        "p99_search_ms": float(np.percentile(latencies, 99)) if len(latencies) else 0.0,
    }


def sparse_size_bytes(index: LiveIndex) -> int:
    """Bytes of the segments' sparse structures (their ``.npy`` arrays and ``meta.json``; the
    dense part and stored texts excluded)."""
    total = 0
    for state in index.refresh().segments:
        segment = state.segment
        total += (segment.path / "meta.json").stat().st_size
        total += sum(info["bytes"] for name, info in segment.meta["arrays"].items() if not name.startswith("doc_text"))
    return total


def evaluate_index(encoder, index_dir: str | Path, queries: dict[str, str], qrels: dict, k: int,
                   scorer: str = "auto", measures: dict | None = None) -> dict:
    """Metrics (``measures``: `lsr.metrics.evaluate`'s) and efficiency of ``encoder`` over an
    index built with it."""
    with LiveIndex(index_dir, writer="never") as index:
        if index.vocab_size != encoder.vocab_size:
            raise ValueError(f"{index_dir}: index vocabulary has {index.vocab_size} terms but the query encoder "
                             f"has {encoder.vocab_size}; search it with the model it was built with")
        run, vectors, batched_ms = retrieve(encoder, index, queries, k, scorer)
        encode = encode_figures(batched_ms, encode_latencies_ms(encoder.encode_queries, list(queries.values())))
        latencies = search_latencies_ms(index, vectors, k, scorer)
        return {"metrics": evaluate(run, qrels, measures), "efficiency": efficiency(index, vectors, encode, latencies),
                "run": run, "query_vectors": vectors}
