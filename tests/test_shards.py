"""Sharded indexes: the partition, the manifest, the sharded build and `ShardedIndex` against
brute force over every shard's documents."""

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.eval.crash_sim import brute_force_top_k
from lsr.index.format import IndexFormatError
from lsr.index.live import DocumentNotFound, LiveIndex
from lsr.index.sharded import ShardedIndex, open_index
from lsr.index.sharded_build import ShardedBuild, shard_rows
from lsr.index.shards import MANIFEST, group_by_shard, merge_top_k, read_manifest, shard_of, shards_of
from lsr.index.sparse_batch import SparseBatch

VOCAB = 50


def random_batch(rng, rows: int, density: float = 0.2) -> SparseBatch:
    matrix = sp.random(rows, VOCAB, density=density, random_state=rng, format="csr",
                       data_rvs=lambda n: (rng.random(n) * 3 + 0.01).astype(np.float32))
    return SparseBatch.from_scipy(matrix)


def build_sharded(path, num_shards: int, num_docs: int = 300, seed: int = 0, **options):
    rng = np.random.default_rng(seed)
    build = ShardedBuild(path, num_shards, VOCAB, {"encoder": {"model": "m"}}, background=False, **options)
    for start in range(0, num_docs, 64):
        ids = [f"doc-{i}" for i in range(start, min(num_docs, start + 64))]
        build.add(ids, random_batch(rng, len(ids)), [f"title {i}" for i in ids])
    return build.finish()


def oracle(index: ShardedIndex, terms, weights, k: int) -> list[tuple[str, float]]:
    """Brute force over every shard (all of each shard's matches), ranked by score."""
    found = []
    for live in index.shards:
        found += brute_force_top_k(live.refresh(), terms, weights, 10**9)
    found.sort(key=lambda pair: -pair[1])
    return found[:k]


def test_shard_of_is_stable_and_even():
    assert shard_of("", 4) in range(4) and shard_of("\u00e9t\u00e9", 3) in range(3)
    counts = np.bincount([shard_of(str(i), 8) for i in range(40_000)], minlength=8)
    assert counts.min() > 0.9 * 5000 and counts.max() < 1.1 * 5000
    assert all(shard_of(f"x{i}", 1) == 0 for i in range(100))


def test_shard_of_pinned_values():
    # Pinned when the partition was defined: a changed hash would send stored ids to the wrong shard.
    assert [shard_of(doc_id, 16) for doc_id in ("0", "1", "doc-1", "MED-10", "d8799999")] == [2, 15, 4, 10, 6]


def test_shards_of_equals_shard_of_on_random_ids():
    rng = np.random.default_rng(11)
    alphabet = list("abcXYZ019-_ \u00e9\u4e2d\U0001f600")
    ids = ["", "0", "d8799999"] + ["".join(rng.choice(alphabet, size=rng.integers(1, 30)))
                                    for _ in range(3000)]
    for num_shards in (1, 2, 3, 8, 16, 4096):
        assert shards_of(ids, num_shards).tolist() == [shard_of(d, num_shards) for d in ids]
    assert shards_of([], 4).tolist() == []
    groups = group_by_shard(ids, 5)
    assert {p: s for s, ps in groups.items() for p in ps} == {p: shard_of(d, 5) for p, d in enumerate(ids)}


def test_take_equals_scipy_rows():
    rng = np.random.default_rng(3)
    batch = random_batch(rng, 40)
    rows = np.array([5, 0, 39, 5, 17])
    taken = batch.take(rows)
    assert (taken.to_scipy() != batch.to_scipy()[rows]).nnz == 0
    assert taken.take(np.array([], dtype=np.int64)).nnz == 0


def test_shard_rows_partition_in_input_order():
    ids = [f"id{i}" for i in range(200)]
    parts = shard_rows(ids, 3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(200))
    for shard, rows in enumerate(parts):
        assert all(shard_of(ids[r], 3) == shard for r in rows) and list(rows) == sorted(rows)


def test_merge_top_k_by_score_then_shard_order():
    merged = merge_top_k([(["a", "b"], np.array([3.0, 1.0])), (["c", "d"], np.array([3.0, 2.0]))], 3)
    assert merged[0] == ["a", "c", "d"] and merged[1].tolist() == [3.0, 3.0, 2.0]
    assert merge_top_k([([], np.zeros(0))], 5)[0] == []


@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("scorer", ["auto", "bmp", "exhaustive"])
def test_sharded_search_equals_brute_force(tmp_path, num_shards, scorer):
    path = build_sharded(tmp_path / "ix", num_shards)
    rng = np.random.default_rng(7)
    with ShardedIndex(path) as index:
        assert index.num_docs == 300
        for name in read_manifest(path).shards:  # every document in the shard that owns it
            with LiveIndex(path / name, writer="never") as live:
                view = live.refresh()
                assert all(shard_of(s.segment.doc_ids[i], num_shards) == int(name[-4:])
                           for s in view.segments for i in range(s.segment.num_docs))
        for _ in range(20):
            terms = rng.choice(VOCAB, size=6, replace=False).astype(np.uint32)
            weights = rng.random(6).astype(np.float32) * 2
            for k in (1, 10, 400):
                ids, scores = index.search_sparse(terms, weights, k, scorer=scorer)
                expected = oracle(index, terms, weights, k)
                np.testing.assert_allclose(scores, [s for _, s in expected], rtol=1e-12)
                groups = {}
                for doc_id, score in expected:
                    groups.setdefault(round(score, 9), set()).add(doc_id)
                for doc_id, score in zip(ids, scores):  # same documents, up to order among ties
                    assert doc_id in groups[round(float(score), 9)]


def test_sharded_writes_go_to_their_shard_and_batch_equals_single(tmp_path):
    path = build_sharded(tmp_path / "ix", 3)
    rng = np.random.default_rng(11)
    with ShardedIndex(path) as index:
        new = random_batch(rng, 30)
        replaced = index.add_many([(f"new-{i}", f"t{i}", "", *new.row(i), None) for i in range(30)]
                                  + [("doc-5", "again", "", *new.row(0), None)])
        assert replaced == [False] * 30 + [True]
        index.delete("doc-7")
        with pytest.raises(DocumentNotFound):
            index.delete("doc-7")
        assert index.num_docs == 300 + 30 - 1
        owner = index.shards[shard_of("new-3", 3)]
        assert owner.contains("new-3") and sum(live.contains("new-3") for live in index.shards) == 1
        assert index.document("doc-5")["title"] == "again"
        assert set(index.documents(["doc-5", "new-4", "doc-7"])) == {"doc-5", "new-4"}
        queries = random_batch(rng, 8, density=0.1)
        batch = index.search_sparse_batch(queries, 10)
        for q in range(len(queries)):
            single = index.search_sparse(*queries.row(q), 10)
            assert batch[q][0] == single[0] and np.array_equal(batch[q][1], single[1])
        index.flush()
        stats = index.stats()
        assert stats["documents"] == 329 and len(stats["shards"]) == 3
        assert all(s["name"].startswith("shard-") for s in stats["segments"])


def test_open_index_picks_the_kind(tmp_path):
    path = build_sharded(tmp_path / "ix", 2)
    with open_index(path) as index:
        assert isinstance(index, ShardedIndex)
    with open_index(path / "shard-0001") as index:
        assert isinstance(index, LiveIndex)


def test_damaged_or_missing_manifest_is_a_clear_error(tmp_path):
    path = build_sharded(tmp_path / "ix", 2)
    data = (path / MANIFEST).read_bytes()
    (path / MANIFEST).write_bytes(data.replace(b"shard-0001", b"shard-0009"))
    with pytest.raises(IndexFormatError, match="checksum"):
        ShardedIndex(path)
    (path / MANIFEST).write_bytes(data)
    (path / "shard-0001").rename(path / "elsewhere")
    with pytest.raises(IndexFormatError, match="shard directory 'shard-0001' is missing"):
        ShardedIndex(path)


def test_sharded_build_refuses_a_foreign_directory_and_overwrites_same_count(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        ShardedBuild(tmp_path / "busy", 2, VOCAB)
    path = build_sharded(tmp_path / "ix", 2, num_docs=50)
    with pytest.raises(FileExistsError, match="already holds"):
        ShardedBuild(path, 2, VOCAB)
    with pytest.raises(FileExistsError, match="holds 2 shards"):
        ShardedBuild(path, 3, VOCAB, overwrite=True)
    build_sharded(path, 2, num_docs=80, seed=1, overwrite=True)
    with ShardedIndex(path) as index:
        assert index.num_docs == 80


def test_one_empty_shard_is_fine_all_empty_is_refused(tmp_path):
    build = ShardedBuild(tmp_path / "ix", 4, VOCAB, background=False)
    build.add(["only"], SparseBatch.from_dicts([{1: 1.0}], VOCAB))
    with ShardedIndex(build.finish()) as index:
        assert index.search_sparse(np.array([1], np.uint32), np.array([1.0], np.float32), 3)[0] == ["only"]
    build = ShardedBuild(tmp_path / "zero", 2, VOCAB, background=False)
    build.add(["a"], SparseBatch.from_dicts([{}], VOCAB))
    with pytest.raises(ValueError, match="every document weight is zero"):
        build.finish()
    assert not (tmp_path / "zero").exists()
