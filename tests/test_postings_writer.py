"""The streaming postings writer against the in-memory builder of the same arrays (``index.bmp_build``)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import postings_writer
from lsr.index.bmp_build import build_bmp_arrays
from lsr.index.format import POSTINGS_ARRAY_NAMES, load_array
from lsr.index.postings_writer import PostingsWriter


def random_impacts(rng, n: int, vocab: int, density: float) -> sp.csr_matrix:
    docs = sp.random(n, vocab, density=density, random_state=rng, format="csr", dtype=np.float32)
    docs.data = rng.integers(1, 256, docs.nnz).astype(np.float32)
    docs.sort_indices()
    return docs


@pytest.mark.parametrize("block_size, chunk, n", [(8, 1 << 23, 500), (8, 300, 500), (3, 97, 301), (1, 50, 40),
                                                 (256, 1000, 700), (16, 200, 0),
                                                 (8, 1 << 16, 140_001)])  # three doc-id chunks
def test_streaming_equals_in_memory_build(tmp_path, monkeypatch, block_size, chunk, n):
    monkeypatch.setattr(postings_writer, "RANGE_POSTINGS", 500)  # many term ranges too
    rng = np.random.default_rng(block_size * 1000 + n)
    vocab = 120
    docs = random_impacts(rng, n, vocab, 0.3 if n < 100 else 0.05).tolil()
    docs[: min(n, 60), 5] = 200  # a term in most blocks: a dense block-max row
    docs = docs.tocsr()
    docs.sort_indices()
    expected_dir, streamed_dir = tmp_path / "expected", tmp_path / "streamed"
    expected_dir.mkdir()
    streamed_dir.mkdir()
    by_term = docs.T.tocsr()
    by_term.sort_indices()
    impacts = by_term.data.astype(np.uint8)
    build_bmp_arrays(by_term.indptr.astype(np.int64), by_term.indices.astype(np.uint32), impacts, n, block_size,
                     expected_dir)
    np.save(expected_dir / "term_post_impacts.npy", impacts)
    # 16-bit impacts: the 8-bit one in the high byte, a random low byte; the low bytes, built
    # as if they were impacts, show where each posting must land.
    low = docs.copy()
    low.data = rng.integers(0, 256, docs.nnz).astype(np.float32)
    low_dir = tmp_path / "low"
    low_dir.mkdir()
    low_by_term = low.T.tocsr()
    low_by_term.sort_indices()
    build_bmp_arrays(low_by_term.indptr.astype(np.int64), low_by_term.indices.astype(np.uint32),
                     low_by_term.data.astype(np.uint8), n, block_size, low_dir)
    nnz = np.diff(docs.indptr)
    block_postings = np.add.reduceat(nnz, np.arange(0, n, block_size)) if n else np.zeros(1, np.int64)
    writer = PostingsWriter(streamed_dir, vocab, n, block_size, max_block_postings=int(block_postings.max()) + 1,
                            max_postings=int(nnz.sum()), chunk_postings=chunk, fine=True)
    for start in range(0, n, 37):  # uneven pieces
        rows, low_rows = docs[start : start + 37], low[start : start + 37]
        fine = rows.data.astype(np.uint16) * 256 + low_rows.data.astype(np.uint16)
        writer.add(np.diff(rows.indptr), rows.indices, rows.data.astype(np.uint8), fine)
    writer.finish()
    assert not (streamed_dir / "runs").exists()
    for name in POSTINGS_ARRAY_NAMES:
        a, b = load_array(expected_dir / f"{name}.npy"), load_array(streamed_dir / f"{name}.npy")
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
    fine = load_array(streamed_dir / "block_post_impacts16.npy")
    assert fine.dtype == np.uint16
    assert np.array_equal(fine >> 8, load_array(expected_dir / "block_post_impacts.npy"))
    assert np.array_equal(fine & 255, load_array(low_dir / "block_post_impacts.npy"))


def test_document_counts_are_checked(tmp_path):
    writer = PostingsWriter(tmp_path, 10, 2, 4, 100, 100)
    with pytest.raises(ValueError, match="add up"):
        writer.add([2], np.array([1], np.uint32), np.array([1], np.uint8))
    writer.add([1], np.array([1], np.uint32), np.array([1], np.uint8))
    with pytest.raises(ValueError, match="16-bit impacts must be given"):
        writer.add([1], np.array([1], np.uint32), np.array([1], np.uint8), np.array([256], np.uint16))
    with pytest.raises(ValueError, match="1 documents added, 2 announced"):
        writer.finish()
