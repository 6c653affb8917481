"""Shared by the engine benchmarks: load a grown collection, sample queries, build our index."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from numba import njit

from lsr.index.build import build_index
from lsr.index.commit import generations
from lsr.index.format import Segment
from lsr.index.live import open_single_segment
from lsr.index.npy_stream import NpyReader
from lsr.index.sparse_batch import SparseBatch

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


def document_vectors(collection: Path, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The vectors (term ids, weights) of ``count`` seeded random documents of a collection, in
    memory: what the write benchmarks add under new ids."""
    indptr = np.load(collection / "docs" / "indptr.npy")
    indices, values = NpyReader(collection / "docs" / "indices.npy"), NpyReader(collection / "docs" / "values.npy")
    rows = np.random.default_rng(seed).choice(len(indptr) - 1, size=count, replace=False)
    return [(indices.read(int(indptr[r]), int(indptr[r + 1])), values.read(int(indptr[r]), int(indptr[r + 1])))
            for r in rows]


def doc_chunks(docs: SparseBatch):
    for start in range(0, len(docs), CHUNK):
        end = min(start + CHUNK, len(docs))
        a, b = docs.indptr[start], docs.indptr[end]
        yield [f"d{i}" for i in range(start, end)], SparseBatch(
            docs.indptr[start : end + 1] - a, docs.indices[a:b], docs.values[a:b], VOCAB_SIZE
        ), None


def build_or_open(docs: SparseBatch, index_dir: Path, **options) -> tuple[Segment, float]:
    """Build our index once (cached on disk by ``index_dir``); returns it and the build seconds."""
    if generations(index_dir):
        from lsr.index.upgrade import upgrade_if_needed

        upgrade_if_needed(index_dir)  # built by an older build of this project
        index = open_single_segment(index_dir)
        return index, float(index.meta["build_seconds"])
    started = time.perf_counter()
    # One segment, reordered as a whole (the peers get the same order): not the bounded-memory
    # segmented build of `lsr index`, whose merged order costs latency (eval/results/bench_segments_1m).
    build_index(index_dir, doc_chunks(docs), VOCAB_SIZE, {"corpus": str(index_dir)}, segment_docs=None, **options)
    return open_single_segment(index_dir), time.perf_counter() - started


def doc_order(index: Segment) -> np.ndarray:
    """``order[i]`` = the collection position of internal doc ``i`` (ids are ``d<position>``)."""
    return np.array([int(index.doc_ids[i][1:]) for i in range(index.num_docs)], dtype=np.int64)


@njit(cache=True, nogil=True)
def _gather_rows(indptr, indices, values, order, out_indptr, out_indices, out_values):
    pos = 0
    for i in range(order.shape[0]):
        for p in range(indptr[order[i]], indptr[order[i] + 1]):
            out_indices[pos] = indices[p]
            out_values[pos] = values[p]
            pos += 1
        out_indptr[i + 1] = pos


@njit(cache=True, nogil=True)
def _doc_major_counts(block_post_offsets, block_post_docs, block_size, counts):
    for blk in range(block_post_offsets.shape[0] - 1):
        for p in range(block_post_offsets[blk], block_post_offsets[blk + 1]):
            counts[blk * block_size + block_post_docs[p]] += 1


@njit(cache=True, nogil=True)
def _doc_major_fill(block_term_offsets, block_terms, block_entry_starts, block_post_offsets, block_post_docs,
                    block_post_impacts, block_size, indptr, out_indices, out_values):
    """Block by block through the forward index (terms ascending within a block), so each doc's
    row comes out sorted and the output is written in order: scattering term-major postings
    into file-backed arrays instead made the kernel rewrite the same dirty pages for an hour."""
    cursor = np.empty(block_size, dtype=np.int64)
    num_docs = indptr.shape[0] - 1
    for blk in range(block_post_offsets.shape[0] - 1):
        first = blk * block_size
        for d in range(min(block_size, num_docs - first)):
            cursor[d] = indptr[first + d]
        base, block_end = block_post_offsets[blk], block_post_offsets[blk + 1]
        for e in range(block_term_offsets[blk], block_term_offsets[blk + 1]):
            start = base + block_entry_starts[e]
            end = base + block_entry_starts[e + 1] if e + 1 < block_term_offsets[blk + 1] else block_end
            for p in range(start, end):
                d = block_post_docs[p]
                out_indices[cursor[d]] = block_terms[e]
                out_values[cursor[d]] = block_post_impacts[p]
                cursor[d] += 1


def _new_batch_files(out_dir: Path, rows: int, nnz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return tuple(np.lib.format.open_memmap(out_dir / f"{name}.npy", mode="w+", dtype=dtype, shape=(size,))
                 for name, dtype, size in (("indptr", np.int64, rows + 1), ("indices", np.uint32, max(nnz, 1)),
                                           ("values", np.float32, max(nnz, 1))))


def _open_batch_files(out_dir: Path, nnz: int) -> SparseBatch:
    indptr, indices, values = (np.load(out_dir / f"{n}.npy", mmap_mode="r") for n in ("indptr", "indices", "values"))
    if nnz == 0:  # a memory map cannot be empty: the files hold one unused slot
        indices, values = indices[:0], values[:0]
    return SparseBatch(indptr, indices, values, VOCAB_SIZE)


def reordered_docs(docs: SparseBatch, order: np.ndarray, out_dir: Path) -> SparseBatch:
    """Rows of ``docs`` in ``order``, written to memory-mapped ``.npy`` files in ``out_dir``: a
    4M-doc collection does not fit in memory twice, and peers get the files by path."""
    indptr, indices, values = _new_batch_files(out_dir, len(order), docs.nnz)
    indptr[0] = 0
    _gather_rows(docs.indptr, docs.indices, docs.values, np.asarray(order, dtype=np.int64), indptr, indices, values)
    for array in (indptr, indices, values):
        array.flush()
    return _open_batch_files(out_dir, docs.nnz)


def impact_docs(index: Segment, out_dir: Path) -> SparseBatch:
    """Our index's uint8 impacts, doc-major in internal doc order, on memory-mapped files (as
    `Segment.to_scipy_docs`, without holding the collection in memory)."""
    p = index.postings
    counts = np.zeros(max(index.num_docs, p.num_blocks * p.block_size), dtype=np.int64)
    _doc_major_counts(p.block_post_offsets, p.block_post_docs, p.block_size, counts)
    counts = counts[: index.num_docs]
    nnz = int(counts.sum())
    indptr, indices, values = _new_batch_files(out_dir, index.num_docs, nnz)
    indptr[0] = 0
    np.cumsum(counts, out=indptr[1:])
    _doc_major_fill(p.block_term_offsets, p.block_terms, p.block_entry_starts, p.block_post_offsets,
                    p.block_post_docs, p.block_post_impacts, p.block_size, np.array(indptr), indices, values)
    for array in (indptr, indices, values):
        array.flush()
    return _open_batch_files(out_dir, nnz)


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


def link_copy(source: Path, target: Path) -> None:
    """A copy of an index directory that shares its immutable files (segments, delete files,
    commits) by hard links and copies the rest: the log and the lock files change in place."""
    import os
    import shutil

    def copy(src: str, dst: str) -> None:
        relative = Path(src).relative_to(source).parts
        if relative[0] in ("segments", "deletes") or relative[0].startswith("commit-"):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=copy)
