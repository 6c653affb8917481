"""The faiss part of an index: exact search against numpy, HNSW recall, build-order mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index.build import IndexBuild, build_index
from lsr.index.builder import SegmentBuilder
from lsr.index.dense import DenseIndex, DenseIndexError, DenseOptions, has_dense_index, normalize_rows
from lsr.index.format import IndexFormatError, Segment
from lsr.index.live import LiveIndex
from lsr.index.sparse_batch import SparseBatch


def _build(tmp_path, vectors: np.ndarray, options: DenseOptions | None = None):
    rng = np.random.default_rng(0)
    n = len(vectors)
    sparse = sp.random(n, 200, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    sparse.data = np.abs(sparse.data) + 0.1
    builder = SegmentBuilder(tmp_path / "segment", 200, {}, reorder="bp", block_size=8,
                             dense={"model": "test", "dim": vectors.shape[1], "options": options})
    for start in range(0, n, 97):  # several chunks
        rows = slice(start, start + 97)
        builder.add([f"d{i}" for i in range(n)][rows], SparseBatch.from_scipy(sparse[rows]), dense=vectors[rows])
    return builder.finish()


def test_flat_search_equals_numpy_in_internal_order(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    directory = _build(tmp_path, vectors)
    index, dense = Segment.open(directory), DenseIndex.open(directory, 500)
    assert index.meta["doc_order"] == "bp"
    external = np.array([int(index.doc_ids[i][1:]) for i in range(500)])  # internal -> input row
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    ids, scores = dense.search(queries, 10)
    expected = normalize_rows(queries) @ normalize_rows(vectors).T
    for q in range(5):
        top = np.argsort(-expected[q])[:10]
        assert external[ids[q]].tolist() == top.tolist()
        np.testing.assert_allclose(scores[q], expected[q][top], rtol=1e-5)
    assert index.dense is not None and index.dense.num_docs == 500


def test_hnsw_parameters_recorded_and_recall(tmp_path):
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    directory = _build(tmp_path, vectors, DenseOptions("hnsw", hnsw_m=16, ef_construction=80, ef_search=64))
    meta = json.loads((directory / "dense" / "dense.json").read_text())
    assert (meta["kind"], meta["hnsw_m"], meta["ef_construction"], meta["ef_search"]) == ("hnsw", 16, 80, 64)
    dense = DenseIndex.open(directory)
    assert dense.faiss_index.hnsw.efSearch == 64
    index = Segment.open(directory)
    external = np.array([int(index.doc_ids[i][1:]) for i in range(2000)])
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    ids, _ = dense.search(queries, 10)
    exact = np.argsort(-(normalize_rows(queries) @ normalize_rows(vectors).T), axis=1)[:, :10]
    recall = np.mean([len(set(external[ids[q]]) & set(exact[q])) / 10 for q in range(20)])
    assert recall >= 0.9


def test_checksum_mismatch_and_wrong_count_are_reported(tmp_path):
    directory = _build(tmp_path, np.ones((50, 4), dtype=np.float32))
    with pytest.raises(DenseIndexError, match="50 vectors"):
        DenseIndex.open(directory, num_docs=51)
    segment = Segment.open(directory)
    with open(directory / "dense" / "vectors.faiss", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(IndexFormatError, match="vectors.faiss: .* bytes"):
        segment.dense  # checked before faiss reads it, even in a segment opened without checksums
    with pytest.raises(IndexFormatError, match="vectors.faiss"):
        Segment.open(directory)


def test_index_without_dense_part(tmp_path):
    batch = SparseBatch.from_dicts([{1: 1.0}], 10)
    directory = build_index(tmp_path / "plain", [(["a"], batch, None)], 10)
    segment = next((directory / "segments").iterdir())
    assert not has_dense_index(segment)
    with pytest.raises(DenseIndexError, match="no dense index"):
        DenseIndex.open(segment)
    with LiveIndex(directory) as live, pytest.raises(DenseIndexError, match="no dense index"):
        live.search_dense(np.ones(4, np.float32), 3)


def test_dense_search_over_segments_deletes_and_buffer_equals_numpy(tmp_path):
    """Several segments (each its own faiss index), deletions inside faiss (an id selector) and
    writes not yet flushed: the same top k as numpy over the live vectors."""
    rng = np.random.default_rng(3)
    n, dim = 300, 8
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    sparse = sp.random(n, 50, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    ids = [f"d{i}" for i in range(n)]
    build = IndexBuild(tmp_path / "ix", 50, segment_docs=100, merge=False, dense={"model": "test", "dim": dim})
    for start in range(0, n, 100):
        rows = slice(start, start + 100)
        build.add(ids[rows], SparseBatch.from_scipy(sparse[rows]), dense=vectors[rows])
    build.finish()
    live_vectors = dict(zip(ids, vectors))
    with LiveIndex(tmp_path / "ix") as live:
        assert len(live.refresh().segments) == 3
        for i in range(0, n, 7):
            live.delete(f"d{i}")
            del live_vectors[f"d{i}"]
        live.flush()  # some deletions committed in delete files ...
        for i in range(3, n, 11):
            if f"d{i}" in live_vectors:
                live.delete(f"d{i}")  # ... and some only in the buffer
                del live_vectors[f"d{i}"]
        for j in range(5):
            vector = rng.normal(size=dim).astype(np.float32)
            live.add(f"new{j}", "", "", [1], [1.0], dense=vector)
            live_vectors[f"new{j}"] = vector
        names = list(live_vectors)
        matrix = normalize_rows(np.stack([live_vectors[name] for name in names]))
        for _ in range(5):
            query = rng.normal(size=dim).astype(np.float32)
            expected = matrix @ normalize_rows(query[None, :])[0]
            top = np.argsort(-expected)[:20]
            found, scores = live.search_dense(query, 20)
            assert found == [names[t] for t in top]
            np.testing.assert_allclose(scores, expected[top], rtol=1e-5)


def test_bad_options_and_shapes():
    with pytest.raises(ValueError, match="kind"):
        DenseOptions("ivf")
    with pytest.raises(ValueError, match="hnsw_m"):
        DenseOptions("hnsw", hnsw_m=0)
