"""Dense retrieval and sparse-dense fusion over whole query sets (the evaluation's side of
hybrid search; the service does the same per request).

Each stage is timed per query, one query at a time: query encoding (and, apart, batched), the
search, and the fusion, so that a hybrid system's latency is the sum of its stages.
"""

from __future__ import annotations

import time

import numpy as np

from lsr.index.fusion import fuse
from lsr.index.live import LiveIndex

Run = dict[str, dict[str, float]]


def retrieve_dense(encoder, index: LiveIndex, queries: dict[str, str], k: int) -> dict:
    """Encode every query, search the index's dense part one query at a time.

    Returns:
        ``{"run", "encode" (`lsr.evaluation.encode_figures`), "search_ms" (array per query)}``.
    """
    from lsr.evaluation import encode_figures, encode_latencies_ms

    query_ids = list(queries)
    started = time.perf_counter()
    vectors = encoder.encode_queries([queries[q] for q in query_ids])
    batched_ms = (time.perf_counter() - started) * 1000 / max(1, len(query_ids))
    encode = encode_figures(batched_ms, encode_latencies_ms(encoder.encode_queries, [queries[q] for q in query_ids]))
    if query_ids:
        index.search_dense(vectors[0], k)  # warm-up
    run: Run = {}
    latencies = np.empty(len(query_ids))
    for row, qid in enumerate(query_ids):
        started = time.perf_counter()
        ids, scores = index.search_dense(vectors[row], k)
        latencies[row] = (time.perf_counter() - started) * 1000
        run[qid] = {doc_id: float(s) for doc_id, s in zip(ids, scores)}
    return {"run": run, "encode": encode, "search_ms": latencies}


def fuse_runs(sparse: Run, dense: Run, k: int, method: str = "rrf", **options) -> tuple[Run, np.ndarray]:
    """Fuse two runs query by query (`index.fusion.fuse`).

    Returns:
        The fused run (``k`` per query) and the fusion time of each query in ms.
    """
    fused: Run = {}
    latencies = np.empty(len(sparse))
    for row, qid in enumerate(sparse):
        first, second = sparse[qid], dense.get(qid, {})
        started = time.perf_counter()
        ids, scores = fuse((list(first), list(first.values())), (list(second), list(second.values())),
                           method=method, limit=k, **options)
        latencies[row] = (time.perf_counter() - started) * 1000
        fused[qid] = dict(zip(ids, scores.tolist()))
    return fused, latencies


def stage_summary(stages: dict[str, float | np.ndarray]) -> dict[str, float]:
    """Mean ms of each stage (arrays are per-query latencies), and their sum as ``total``."""
    means = {name: float(np.mean(value)) if np.ndim(value) else float(value) for name, value in stages.items()}
    means["total"] = sum(means.values())
    return means
