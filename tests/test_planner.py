import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index.build import build_index
from lsr.index.live import open_single_segment
from lsr.index.scorers import planner
from lsr.index.scorers.exhaustive import search as exhaustive_search
from lsr.index.sparse_batch import SparseBatch


@pytest.fixture
def index(tmp_path):
    docs = sp.random(3000, 400, density=0.03, random_state=0, format="csr", dtype=np.float32) * 3
    build_index(tmp_path / "ix", [([str(i) for i in range(3000)], SparseBatch.from_scipy(docs), None)], 400,
                reorder="bp", block_size=16)
    return open_single_segment(tmp_path / "ix")


def test_rule(index, monkeypatch):
    assert planner.choose_scorer(index.num_docs, 10) == "exhaustive"  # a small collection
    assert planner.choose_scorer(index.num_docs, 10, alpha=0.9) == "bmp"  # approximate needs BMP
    assert planner.choose_scorer(index.num_docs, 10, max_blocks=100) == "bmp"
    monkeypatch.setattr(planner, "MIN_DOCS_FOR_BMP", 1000)
    assert planner.choose_scorer(index.num_docs, 10) == "bmp"
    assert planner.choose_scorer(index.num_docs, planner.MAX_QUERY_TERMS_FOR_BMP + 1) == "exhaustive"
    assert planner.choose_scorer(index.num_docs, 10, k=1000) == "exhaustive"  # large k needs a larger collection
    monkeypatch.setattr(planner, "MIN_DOCS_FOR_BMP_LONG_QUERIES", 2000)
    monkeypatch.setattr(planner, "MIN_DOCS_FOR_BMP_LARGE_K", 2000)
    assert planner.choose_scorer(index.num_docs, planner.MAX_QUERY_TERMS_FOR_BMP + 1) == "bmp"
    assert planner.choose_scorer(index.num_docs, 10, k=1000) == "bmp"


def test_every_scorer_gives_the_same_results(index, monkeypatch):
    monkeypatch.setattr(planner, "MIN_DOCS_FOR_BMP", 1000)
    monkeypatch.setattr(planner, "MAX_QUERY_TERMS_FOR_BMP", 12)
    rng = np.random.default_rng(3)
    queries = SparseBatch.from_scipy(sp.random(40, 400, density=0.04, random_state=rng, format="csr", dtype=np.float32))
    lengths = np.diff(queries.indptr)
    assert (lengths > 12).any() and (lengths <= 12).any()  # both routes are taken
    for precision in ("auto", "8-bit"):  # auto is 16-bit here: the index has 16-bit impacts
        batch = planner.search_batch(index, queries, 20, precision=precision)
        for q in range(len(queries)):
            expected = exhaustive_search(index, *queries.row(q), 20, "16-bit" if precision == "auto" else precision)
            for scorer in ("auto", "exhaustive", "bmp"):
                found = planner.search(index, *queries.row(q), 20, scorer, precision=precision)
                assert np.array_equal(found[0], expected[0]) and np.array_equal(found[1], expected[1])
            assert np.array_equal(batch.row(q)[0], expected[0]) and np.array_equal(batch.row(q)[1], expected[1])


def test_bad_scorer_and_approximate_exhaustive(index):
    with pytest.raises(ValueError, match="scorer must be one of"):
        planner.search(index, [1], [1.0], 10, "wand")
    with pytest.raises(ValueError, match="exhaustive scorer is exact"):
        planner.search(index, [1], [1.0], 10, "exhaustive", alpha=0.5)
    with pytest.raises(ValueError, match="exhaustive scorer is exact"):
        planner.search(index, [1], [1.0], 10, "exhaustive", max_blocks=5)
