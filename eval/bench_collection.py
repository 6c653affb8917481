"""Shared by the engine benchmarks: load a grown collection, sample queries, build our index."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from index.builder import build_index
from index.format import SparseIndex
from index.sparse_batch import SparseBatch

VOCAB_SIZE = 30522
CHUNK = 50_000


def load_docs(collection: Path, limit: int | None = None) -> SparseBatch:
    """Doc vectors of a `make_bench_corpus.py` output (memory-mapped), the first ``limit`` docs."""
    indptr = np.load(collection / "docs" / "indptr.npy")
    if limit is not None:
        indptr = indptr[: limit + 1]
    indices = np.load(collection / "docs" / "indices.npy", mmap_mode="r")[: indptr[-1]]
    values = np.load(collection / "docs" / "values.npy", mmap_mode="r")[: indptr[-1]]
    return SparseBatch(indptr, indices, values, VOCAB_SIZE)


def sample_queries(collection: Path, count: int, seed: int = 0) -> tuple[np.ndarray, SparseBatch]:
    """A seeded uniform sample of the collection's queries (all sources mixed); ids and vectors."""
    queries = SparseBatch(*(np.load(collection / "queries" / f"{n}.npy") for n in ("indptr", "indices", "values")),
                          VOCAB_SIZE)
    chosen = np.sort(np.random.default_rng(seed).choice(len(queries), size=min(count, len(queries)), replace=False))
    return chosen, SparseBatch.from_scipy(queries.to_scipy()[chosen])


def doc_chunks(docs: SparseBatch):
    for start in range(0, len(docs), CHUNK):
        end = min(start + CHUNK, len(docs))
        a, b = docs.indptr[start], docs.indptr[end]
        yield [f"d{i}" for i in range(start, end)], SparseBatch(
            docs.indptr[start : end + 1] - a, docs.indices[a:b], docs.values[a:b], VOCAB_SIZE
        ), None


def build_or_open(docs: SparseBatch, index_dir: Path, **options) -> tuple[SparseIndex, float]:
    """Build our index once (cached on disk by ``index_dir``); returns it and the build seconds."""
    if (index_dir / "meta.json").is_file():
        index = SparseIndex.open(index_dir)
        return index, float(index.meta["build_seconds"])
    started = time.perf_counter()
    build_index(index_dir, doc_chunks(docs), VOCAB_SIZE, {"corpus": str(index_dir)}, **options)
    return SparseIndex.open(index_dir), time.perf_counter() - started


def doc_order(index: SparseIndex) -> np.ndarray:
    """``order[i]`` = the collection position of internal doc ``i`` (ids are ``d<position>``)."""
    return np.array([int(index.doc_ids[i][1:]) for i in range(index.num_docs)], dtype=np.int64)


def time_queries(fn, queries: SparseBatch) -> tuple[np.ndarray, list]:
    """Per-query latency in ms of ``fn(terms, weights)``, after one warm-up call; and results."""
    fn(*queries.row(0))
    latencies, results = np.empty(len(queries)), []
    for q in range(len(queries)):
        started = time.perf_counter()
        results.append(fn(*queries.row(q)))
        latencies[q] = (time.perf_counter() - started) * 1000
    return latencies, results


def summary(latencies: np.ndarray) -> dict:
    return {"mean_ms": float(np.mean(latencies)), "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}


def write_json(path: Path | None, result: dict) -> None:
    text = json.dumps(result, indent=2)
    if path is not None:
        path.write_text(text + "\n")


def collection_from_run(run_dir: Path, out_dir: Path) -> Path:
    """A benchmark collection (the layout of ``make_bench_corpus.py``) from a ``lsr eval beir``
    run directory: its float doc vectors and its encoded queries, so real encoded BEIR data
    goes through the same engine benchmark."""
    if (out_dir / "docs" / "indptr.npy").is_file():
        return out_dir
    (out_dir / "docs").mkdir(parents=True, exist_ok=True)
    (out_dir / "queries").mkdir(parents=True, exist_ok=True)
    for name in ("indptr", "indices", "values"):
        np.save(out_dir / "docs" / f"{name}.npy", np.load(run_dir / "doc-vectors" / f"{name}.npy"))
    queries = np.load(run_dir / "query-vectors.npz")
    for name in ("indptr", "indices", "values"):
        np.save(out_dir / "queries" / f"{name}.npy", queries[name])
    (out_dir / "meta.json").write_text(json.dumps({"source": str(run_dir)}))
    return out_dir
