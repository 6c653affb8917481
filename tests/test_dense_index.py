"""The faiss part of an index: exact search against numpy, HNSW recall, build-order mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from index.builder import IndexBuilder, build_index
from index.dense import DenseIndex, DenseIndexError, DenseOptions, has_dense_index, normalize_rows, verify_dense
from index.format import Segment
from index.live import open_single_segment
from index.sparse_batch import SparseBatch


def _build(tmp_path, vectors: np.ndarray, options: DenseOptions | None = None):
    rng = np.random.default_rng(0)
    n = len(vectors)
    sparse = sp.random(n, 200, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    sparse.data = np.abs(sparse.data) + 0.1
    builder = IndexBuilder(tmp_path / "idx", 200, {}, reorder="bp", block_size=8,
                           dense={"model": "test", "dim": vectors.shape[1], "options": options})
    for start in range(0, n, 97):  # several chunks
        rows = slice(start, start + 97)
        builder.add([f"d{i}" for i in range(n)][rows], SparseBatch.from_scipy(sparse[rows]), dense=vectors[rows])
    return builder.finish()


def test_flat_search_equals_numpy_in_internal_order(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    directory = _build(tmp_path, vectors)
    index, dense = open_single_segment(directory), DenseIndex.open(directory, 500)
    assert index.meta["doc_order"] == "bp"
    external = np.array([int(index.doc_ids[i][1:]) for i in range(500)])  # internal -> input row
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    ids, scores = dense.search(queries, 10)
    expected = normalize_rows(queries) @ normalize_rows(vectors).T
    for q in range(5):
        top = np.argsort(-expected[q])[:10]
        assert external[ids[q]].tolist() == top.tolist()
        np.testing.assert_allclose(scores[q], expected[q][top], rtol=1e-5)
    assert verify_dense(directory) == []


def test_hnsw_parameters_recorded_and_recall(tmp_path):
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    directory = _build(tmp_path, vectors, DenseOptions("hnsw", hnsw_m=16, ef_construction=80, ef_search=64))
    meta = json.loads((directory / "dense" / "dense.json").read_text())
    assert (meta["kind"], meta["hnsw_m"], meta["ef_construction"], meta["ef_search"]) == ("hnsw", 16, 80, 64)
    dense = DenseIndex.open(directory)
    assert dense.faiss_index.hnsw.efSearch == 64
    index = open_single_segment(directory)
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
    with open(directory / "dense" / "vectors.faiss", "ab") as handle:
        handle.write(b"x")
    assert "does not match" in verify_dense(directory)[0]


def test_index_without_dense_part(tmp_path):
    batch = SparseBatch.from_dicts([{1: 1.0}], 10)
    directory = build_index(tmp_path / "plain", [(["a"], batch, None)], 10)
    assert not has_dense_index(directory)
    with pytest.raises(DenseIndexError, match="no dense index"):
        DenseIndex.open(directory)


def test_bad_options_and_shapes():
    with pytest.raises(ValueError, match="kind"):
        DenseOptions("ivf")
    with pytest.raises(ValueError, match="hnsw_m"):
        DenseOptions("hnsw", hnsw_m=0)
