import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from index.builder import IndexBuilder, build_index
from index.format import IndexFormatError, SparseIndex, verify_checksums
from index.quantize import quantize
from index.sparse_batch import SparseBatch

VOCAB = 300


def random_docs(n=500, seed=0, density=0.03):
    matrix = sp.random(n, VOCAB, density=density, random_state=seed, format="lil", dtype=np.float32) * 3
    matrix[5] = 0  # an empty document
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    return matrix


def chunks_of(matrix, size, titles=True):
    for start in range(0, matrix.shape[0], size):
        rows = range(start, min(start + size, matrix.shape[0]))
        yield (
            [f"doc-{i}" for i in rows],
            SparseBatch.from_scipy(matrix[start : start + size]),
            [f"title {i}" for i in rows] if titles else None,
        )


def test_build_then_open_equals_quantised_input(tmp_path):
    docs = random_docs()
    build_index(tmp_path / "ix", chunks_of(docs, 64), VOCAB, {"encoder": {"model": "m"}})
    index = SparseIndex.open(tmp_path / "ix")
    term_max = docs.max(axis=0).toarray()[0]
    present = term_max > 0
    np.testing.assert_allclose(index.term_scales[present], term_max[present] / 255, rtol=1e-6)
    expected = docs.copy()
    expected.data = quantize(expected.data, index.term_scales[expected.indices])[0].astype(np.float32)
    expected.eliminate_zeros()
    assert (index.to_scipy_docs() != expected).nnz == 0
    assert index.num_docs == 500 and index.meta["num_postings"] == expected.nnz
    assert [index.doc_ids[i] for i in (0, 5, 499)] == ["doc-0", "doc-5", "doc-499"]
    assert index.doc_titles[7] == "title 7"
    assert isinstance(index.postings.term_post_impacts, np.memmap)
    by_term = expected.T.tocsr()
    for term in range(0, VOCAB, 7):  # the term view gives the same postings
        docs, impacts = index.term_postings(term)
        row = by_term[term]
        assert docs.tolist() == row.indices.tolist() and impacts.tolist() == row.data.astype(int).tolist()
    assert verify_checksums(tmp_path / "ix") == []


def test_build_is_independent_of_chunk_size(tmp_path):
    docs = random_docs(seed=3)
    build_index(tmp_path / "a", chunks_of(docs, 7), VOCAB)
    build_index(tmp_path / "b", chunks_of(docs, 500), VOCAB)
    a, b = SparseIndex.open(tmp_path / "a"), SparseIndex.open(tmp_path / "b")
    for name in ("block_terms", "block_entry_starts", "block_post_docs", "term_entry_starts", "term_post_impacts"):
        assert np.array_equal(getattr(a.postings, name), getattr(b.postings, name))


def test_clipping_is_recorded(tmp_path):
    docs = random_docs()
    build_index(tmp_path / "ix", chunks_of(docs, 100), VOCAB, quantization="global", scale_quantile=0.9)
    quant = SparseIndex.open(tmp_path / "ix").meta["quantization"]
    assert quant["clipped"] == pytest.approx(0.1 * docs.nnz, rel=0.15)


def test_global_scale_and_bad_quantization_options(tmp_path):
    docs = random_docs()
    build_index(tmp_path / "ix", chunks_of(docs, 100), VOCAB, quantization="global")
    index = SparseIndex.open(tmp_path / "ix")
    assert index.meta["quantization"]["scale"] == pytest.approx(docs.data.max() / 255)
    assert np.all(index.term_scales == np.float32(index.meta["quantization"]["scale"]))
    with pytest.raises(ValueError, match="apply to quantization='global' only"):
        IndexBuilder(tmp_path / "other", VOCAB, scale=1.0)
    with pytest.raises(ValueError, match="quantization must be one of"):
        IndexBuilder(tmp_path / "other", VOCAB, quantization="log")


def test_non_ascii_ids_and_empty_titles(tmp_path):
    batch = SparseBatch.from_dicts([{1: 1.0}, {2: 0.5}], VOCAB)
    build_index(tmp_path / "ix", [(["é-1", "文"], batch, None)], VOCAB)
    index = SparseIndex.open(tmp_path / "ix")
    assert [index.doc_ids[0], index.doc_ids[1], index.doc_titles[1]] == ["é-1", "文", ""]


def test_refuses_to_overwrite_without_flag(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(), 100), VOCAB)
    with pytest.raises(FileExistsError, match="already exists"):
        IndexBuilder(tmp_path / "ix", VOCAB)


def test_failed_build_leaves_no_index_and_keeps_the_old_one(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(seed=1), 100), VOCAB)
    before = (tmp_path / "ix" / "meta.json").read_text()

    def failing_chunks():
        yield from chunks_of(random_docs(seed=2), 100)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(tmp_path / "ix", failing_chunks(), VOCAB, overwrite=True)
    assert (tmp_path / "ix" / "meta.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no temporary left behind
    assert verify_checksums(tmp_path / "ix") == []


def test_killed_build_leaves_no_index(tmp_path):
    """A build killed by SIGKILL (no cleanup possible) never appears at the target path."""
    script = (
        "import sys, numpy as np\n"
        "from index.builder import IndexBuilder\n"
        "from index.sparse_batch import SparseBatch\n"
        "b = IndexBuilder(sys.argv[1], 10)\n"
        "b.add(['a'], SparseBatch.from_dicts([{1: 1.0}], 10))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "ix")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "ix").exists()
    with pytest.raises(IndexFormatError, match="meta.json is missing"):
        SparseIndex.open(tmp_path / "ix")


def test_other_format_version_is_refused(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(), 100), VOCAB)
    meta_path = tmp_path / "ix" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 1  # an index from before doc reordering and BMP
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="format version 1, but this build reads version 2; rebuild it"):
        SparseIndex.open(tmp_path / "ix")


def test_other_vocabulary_is_refused(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(), 100), VOCAB, {"encoder": {"model": "m"}})
    with pytest.raises(IndexFormatError, match="index vocabulary has 300 terms but the query encoder has 30522"):
        SparseIndex.open(tmp_path / "ix", vocab_size=30522)


def test_verify_detects_a_corrupted_array(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(), 100), VOCAB)
    path = tmp_path / "ix" / "term_post_impacts.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = verify_checksums(tmp_path / "ix")
    assert len(problems) == 1 and "term_post_impacts.npy: sha256" in problems[0]


def test_rejects_bad_batches(tmp_path):
    with IndexBuilder(tmp_path / "ix", VOCAB) as builder:
        with pytest.raises(ValueError, match="2 doc ids for a batch of 1"):
            builder.add(["a", "b"], SparseBatch.from_dicts([{1: 1.0}], VOCAB))
        with pytest.raises(ValueError, match="non-negative"):
            builder.add(["a"], SparseBatch.from_dicts([{1: -1.0}], VOCAB))
        builder.abort()
    assert not (tmp_path / "ix").exists()


def test_empty_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="every document weight is zero"):
        build_index(tmp_path / "ix", [], VOCAB)
    assert list(tmp_path.iterdir()) == []
