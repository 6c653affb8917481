import json
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp

import lsr.index.format as format_module
from lsr.index.build import build_index
from lsr.index.builder import SegmentBuilder
from lsr.index.check import verify_index
from lsr.index.commit import read_newest_commit
from lsr.index.doc_ids import DuplicateIdError, IdTables, find_ids, hash_id
from lsr.index.format import IndexFormatError
from lsr.index.live import LiveIndex, open_single_segment
from lsr.index.quantize import quantize
from lsr.index.sparse_batch import SparseBatch

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


def test_build_then_open_equals_quantised_input(tmp_path, monkeypatch):
    docs = random_docs()
    build_index(tmp_path / "ix", chunks_of(docs, 64), VOCAB, {"encoder": {"model": "m"}})
    index = open_single_segment(tmp_path / "ix")
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
    # Files up to SMALL_FILE_BYTES are read whole when checked, larger ones mapped, not read.
    assert index.meta["arrays"]["term_post_impacts"]["bytes"] <= format_module.SMALL_FILE_BYTES
    assert not isinstance(index.postings.term_post_impacts.base, np.memmap)
    monkeypatch.setattr(format_module, "SMALL_FILE_BYTES", 0)
    assert isinstance(format_module.Segment.open(index.path).postings.term_post_impacts.base, np.memmap)
    by_term = expected.T.tocsr()
    for term in range(0, VOCAB, 7):  # the term view gives the same postings
        docs, impacts = index.term_postings(term)
        row = by_term[term]
        assert docs.tolist() == row.indices.tolist() and impacts.tolist() == row.data.astype(int).tolist()
    assert verify_index(tmp_path / "ix")[0] == []


def test_build_is_independent_of_chunk_size(tmp_path):
    docs = random_docs(seed=3)
    build_index(tmp_path / "a", chunks_of(docs, 7), VOCAB)
    build_index(tmp_path / "b", chunks_of(docs, 500), VOCAB)
    a, b = open_single_segment(tmp_path / "a"), open_single_segment(tmp_path / "b")
    for name in ("block_terms", "block_entry_starts", "block_post_docs", "term_chunk_starts", "term_post_docs", "term_post_impacts"):
        assert np.array_equal(getattr(a.postings, name), getattr(b.postings, name))


def test_segmented_build_merged_in_order_equals_one_pass(tmp_path):
    """Segments of 100 documents, merged at the end keeping each one's order (bounded memory):
    the same impacts per document as one pass over all of them."""
    docs = random_docs(seed=4)
    build_index(tmp_path / "one", chunks_of(docs, 50), VOCAB, reorder="bp")
    build_index(tmp_path / "many", chunks_of(docs, 50), VOCAB, reorder="bp", segment_docs=100)
    one, many = open_single_segment(tmp_path / "one"), open_single_segment(tmp_path / "many")
    assert many.meta["doc_order"] == "concatenated" and one.num_docs == many.num_docs == 500
    assert np.array_equal(one.term_scales, many.term_scales)
    rows_one, rows_many = one.to_scipy_docs(), many.to_scipy_docs()
    position = {many.doc_ids[i]: i for i in range(many.num_docs)}
    for i in range(one.num_docs):
        j = position[one.doc_ids[i]]
        assert (rows_one[i] != rows_many[j]).nnz == 0
        assert one.doc_titles[i] == many.doc_titles[j]
    assert verify_index(tmp_path / "many")[0] == []


def test_clipping_is_recorded(tmp_path):
    docs = random_docs()
    build_index(tmp_path / "ix", chunks_of(docs, 100), VOCAB, quantization="global", scale_quantile=0.9)
    quant = open_single_segment(tmp_path / "ix").meta["quantization"]
    assert quant["clipped"] == pytest.approx(0.1 * docs.nnz, rel=0.15)


def test_global_scale_and_bad_quantization_options(tmp_path):
    docs = random_docs()
    build_index(tmp_path / "ix", chunks_of(docs, 100), VOCAB, quantization="global")
    index = open_single_segment(tmp_path / "ix")
    assert index.meta["quantization"]["scale"] == pytest.approx(docs.data.max() / 255)
    assert np.all(index.term_scales == np.float32(index.meta["quantization"]["scale"]))
    with pytest.raises(ValueError, match="apply to quantization='global' only"):
        SegmentBuilder(tmp_path / "other", VOCAB, scale=1.0)
    with pytest.raises(ValueError, match="quantization must be one of"):
        SegmentBuilder(tmp_path / "other", VOCAB, quantization="log")


def test_non_ascii_ids_and_empty_titles(tmp_path):
    batch = SparseBatch.from_dicts([{1: 1.0}, {2: 0.5}], VOCAB)
    build_index(tmp_path / "ix", [(["é-1", "文"], batch, None)], VOCAB)
    index = open_single_segment(tmp_path / "ix")
    assert [index.doc_ids[0], index.doc_ids[1], index.doc_titles[1]] == ["é-1", "文", ""]


def test_refuses_to_overwrite_without_flag(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(), 100), VOCAB)
    with pytest.raises(FileExistsError, match="already holds an index"):
        build_index(tmp_path / "ix", chunks_of(random_docs(), 100), VOCAB)
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty and not an index"):
        build_index(tmp_path / "stranger", chunks_of(random_docs(), 100), VOCAB)


def test_failed_overwrite_keeps_the_old_index_and_leaves_nothing(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(seed=1), 100), VOCAB)
    before = read_newest_commit(tmp_path / "ix")
    files_before = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "ix").rglob("*"))

    def failing_chunks():
        yield from chunks_of(random_docs(seed=2), 100)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(tmp_path / "ix", failing_chunks(), VOCAB, overwrite=True, segment_docs=150)
    assert read_newest_commit(tmp_path / "ix") == before
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "ix").rglob("*")) == files_before
    assert verify_index(tmp_path / "ix")[0] == []


def test_overwrite_replaces_every_segment(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(seed=1), 100), VOCAB)
    build_index(tmp_path / "ix", chunks_of(random_docs(n=50, seed=2), 10), VOCAB, overwrite=True)
    assert open_single_segment(tmp_path / "ix").num_docs == 50
    assert len(list((tmp_path / "ix" / "segments").iterdir())) == 1  # the old segment is gone


def test_killed_build_leaves_no_index(tmp_path):
    """A build killed by SIGKILL (no cleanup possible) leaves no commit, so no index."""
    script = (
        "import sys\n"
        "from lsr.index.build import IndexBuild\n"
        "from lsr.index.sparse_batch import SparseBatch\n"
        "b = IndexBuild(sys.argv[1], 10, segment_docs=1, background=False)\n"
        "b.add(['a'], SparseBatch.from_dicts([{1: 1.0}], 10))\n"
        "b.add(['b'], SparseBatch.from_dicts([{1: 1.0}], 10))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "ix")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(IndexFormatError, match="no commit file"):
        open_single_segment(tmp_path / "ix")
    build_index(tmp_path / "ix", [(["c"], SparseBatch.from_dicts([{2: 1.0}], 10), None)], 10)  # a new build there
    index = open_single_segment(tmp_path / "ix")
    assert index.num_docs == 1 and len(list((tmp_path / "ix" / "segments").iterdir())) == 1


def test_index_of_the_previous_format_is_refused_with_a_way_out(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "meta.json").write_text(json.dumps({"format": "lsr-index", "format_version": 2}))
    with pytest.raises(IndexFormatError, match="format version 2 .*`lsr index upgrade "):
        LiveIndex(tmp_path / "old")
    build_index(tmp_path / "ix", chunks_of(random_docs(), 100), VOCAB)
    commit_path = next((tmp_path / "ix").glob("commit-*.json"))
    commit_path.write_bytes(commit_path.read_bytes().replace(b'"format_version": 3', b'"format_version": 4'))
    with pytest.raises(IndexFormatError, match="checksum footer"):
        LiveIndex(tmp_path / "ix")


def test_duplicate_ids_are_an_error_or_the_last_wins(tmp_path):
    batch = SparseBatch.from_dicts([{1: 1.0}, {2: 1.0}, {3: 1.0}, {1: 2.0}], VOCAB)
    with pytest.raises(DuplicateIdError, match="duplicate document id 'x'"):
        build_index(tmp_path / "a", [(["x", "y", "z", "x"], batch, None)], VOCAB)
    build_index(tmp_path / "b", [(["x", "y", "z", "x"], batch, ["first", "", "", "last"])], VOCAB, duplicates="last")
    with LiveIndex(tmp_path / "b") as index:
        assert index.num_docs == 3 and index.document("x")["title"] == "last"
    chunks = [(["x", "y"], SparseBatch.from_dicts([{1: 1.0}, {2: 1.0}], VOCAB), ["first", ""]),
              (["z", "x"], SparseBatch.from_dicts([{3: 1.0}, {1: 2.0}], VOCAB), ["", "last"])]
    with pytest.raises(DuplicateIdError, match="'x' .*two chunks"):
        build_index(tmp_path / "c", chunks, VOCAB, segment_docs=2)
    for merge in (True, False):  # across segments too, merged or kept
        build_index(tmp_path / f"d{merge}", chunks, VOCAB, segment_docs=2, duplicates="last", merge=merge)
        with LiveIndex(tmp_path / f"d{merge}") as index:
            ids, _ = index.search_sparse([1], [1.0], 10)
            assert ids == ["x"] and index.document("x")["title"] == "last" and index.num_docs == 3


def test_verify_detects_a_corrupted_array(tmp_path):
    build_index(tmp_path / "ix", chunks_of(random_docs(), 100), VOCAB)
    segment = next((tmp_path / "ix" / "segments").iterdir())
    path = segment / "term_post_impacts.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    problems, _ = verify_index(tmp_path / "ix")
    assert len(problems) == 1 and "term_post_impacts.npy: CRC32" in problems[0]


def test_rejects_bad_batches(tmp_path):
    with SegmentBuilder(tmp_path / "ix", VOCAB) as builder:
        with pytest.raises(ValueError, match="2 doc ids for a batch of 1"):
            builder.add(["a", "b"], SparseBatch.from_dicts([{1: 1.0}], VOCAB))
        with pytest.raises(ValueError, match="non-negative"):
            builder.add(["a"], SparseBatch.from_dicts([{1: -1.0}], VOCAB))
        builder.abort()
    assert not (tmp_path / "ix").exists()


def test_empty_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="every document weight is zero"):
        build_index(tmp_path / "ix", [], VOCAB)
    assert list(tmp_path.iterdir()) == []  # the directory this build created is gone


def test_lookup_by_id_one_and_many_equal_a_dictionary(tmp_path):
    docs = random_docs(300)
    build_index(tmp_path / "ix", chunks_of(docs, 64), VOCAB)
    index = open_single_segment(tmp_path / "ix")
    oracle = index.internal_ids()
    asked = [f"doc-{i}" for i in range(0, 320, 3)] + ["", "doc-", "DOC-1", "é"]
    for doc_id in asked:
        assert index.find(doc_id) == oracle.get(doc_id)
    found = find_ids(index, asked, np.array([hash_id(d) for d in asked], dtype=np.uint64))
    assert found == [(i, oracle[d]) for i, d in enumerate(asked) if d in oracle]


def test_lookup_in_many_segments_at_once_equals_one_segment_at_a_time(tmp_path):
    segments = []
    for n, (start, count) in enumerate([(0, 200), (150, 100), (400, 8), (0, 60)]):  # ids shared between them
        matrix = random_docs(count, seed=n)
        ids = [f"doc-{i}" for i in range(start, start + count)]
        build_index(tmp_path / f"ix{n}", [(ids, SparseBatch.from_scipy(matrix), None)], VOCAB)
        segments.append(open_single_segment(tmp_path / f"ix{n}"))
    asked = [f"doc-{i}" for i in range(0, 420, 7)] + ["doc-403", "", "nope"]
    hashes = np.array([hash_id(d) for d in asked], dtype=np.uint64)
    expected = sorted((s, i, doc) for s, segment in enumerate(segments) for i, doc in find_ids(segment, asked, hashes))
    assert sorted(IdTables(segments).find(asked, hashes)) == expected
    assert {s for s, _, _ in expected} == set(range(len(segments)))  # every segment holds some of them


def test_lookup_by_id_compares_strings_when_hashes_collide():
    # Every id given the same hash: only the string compare tells them apart.
    ids = ["a", "b", "c", "d"]
    table = types.SimpleNamespace(doc_ids=ids, doc_id_hashes=np.full(4, 7, dtype=np.uint64),
                                  doc_id_hash_docs=np.arange(4, dtype=np.uint32))
    asked = ["c", "x", "a", "d"]
    assert find_ids(table, asked, np.full(4, 7, dtype=np.uint64)) == [(0, 2), (2, 0), (3, 3)]
    assert find_ids(table, ["b"], np.array([8], dtype=np.uint64)) == []
