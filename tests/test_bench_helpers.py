"""The engine benchmark's disk-backed helpers against plain scipy on random data."""

import numpy as np
import scipy.sparse as sp

from eval.bench_collection import VOCAB_SIZE, impact_docs, reordered_docs
from eval.bench_engines import exact_float_reference
from index.build import build_index
from index.live import open_single_segment
from index.sparse_batch import SparseBatch


def random_docs(rng, rows: int, density: float = 0.002) -> sp.csr_matrix:
    docs = sp.random(rows, VOCAB_SIZE, density=density, random_state=rng, format="csr", dtype=np.float32)
    docs.data = np.ceil(docs.data * 4)  # few distinct values: many tied scores
    return docs


def test_reordered_docs_equal_scipy_row_indexing(tmp_path):
    rng = np.random.default_rng(0)
    docs = random_docs(rng, 300).tolil()
    docs[5, :] = 0  # an empty row
    docs = docs.tocsr()
    docs.eliminate_zeros()
    assert docs[5].nnz == 0
    order = rng.permutation(300)
    found = reordered_docs(SparseBatch.from_scipy(docs), order, tmp_path / "r")
    assert isinstance(found.indices.base, np.memmap) or isinstance(found.indices, np.memmap)
    assert (found.to_scipy() != docs[order]).nnz == 0


def test_impact_docs_equal_the_index_impacts(tmp_path):
    rng = np.random.default_rng(1)
    docs = random_docs(rng, 500)
    ids = [f"d{i}" for i in range(500)]
    build_index(tmp_path / "ix", [(ids, SparseBatch.from_scipy(docs), None)], VOCAB_SIZE, reorder="bp", block_size=8)
    index = open_single_segment(tmp_path / "ix")
    found = impact_docs(index, tmp_path / "impacts")
    expected = index.to_scipy_docs()
    assert found.to_scipy().shape == expected.shape
    assert (found.to_scipy() != expected).nnz == 0
    assert all(np.all(np.diff(found.row(d)[0].astype(np.int64)) > 0) for d in range(len(found)))


def test_chunked_float_reference_equals_one_pass(tmp_path):
    rng = np.random.default_rng(2)
    docs = SparseBatch.from_scipy(random_docs(rng, 1000, 0.01))
    queries = SparseBatch.from_scipy(random_docs(rng, 20, 0.003))
    dense = docs.to_scipy().astype(np.float64) @ queries.to_scipy().astype(np.float64).T
    for k in (1, 10, 2000):
        found = exact_float_reference(docs, queries, k, chunk=97)
        for q in range(len(queries)):
            scores = dense[:, q].toarray().ravel()
            positive = np.flatnonzero(scores > 0)
            expected = positive[np.lexsort((positive, -scores[positive]))][:k]
            assert found[q].tolist() == expected.tolist()
