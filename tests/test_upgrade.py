"""`lsr index upgrade`: an index of format version 2 (one directory) becomes segments and commits."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index.build import IndexBuild
from lsr.index.check import verify_index
from lsr.index.format import IndexFormatError, Segment
from lsr.index.live import LiveIndex, open_single_segment
from lsr.index.postings_view import term_post_doc_ids
from lsr.index.sparse_batch import SparseBatch
from lsr.cli import main

VOCAB = 120


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _format_1_term_postings(segment) -> dict:
    """Segment format 1's term postings: each entry's first posting, and doc offsets in the block."""
    b = segment.postings
    docs = term_post_doc_ids(b)
    terms = np.repeat(np.arange(segment.vocab_size), b.postings_per_term())
    key = terms * b.num_blocks + docs // b.block_size
    starts = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1, [len(key)]]).astype(np.uint32)
    assert len(starts) == len(b.term_entry_blocks) + 1
    return {"term_entry_starts": starts, "term_post_docs": (docs % b.block_size).astype(np.uint8)}


def version_2_index(tmp_path):
    """A version 2 directory written from a segment as that format stored it: the arrays and a
    meta.json (sha256 per array) at the top, dense/ beside them, live writes in updates.log."""
    rng = np.random.default_rng(0)
    docs = sp.random(80, VOCAB, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    docs.data += 0.1
    ids = [f"d{i}" for i in range(80)]
    build = IndexBuild(tmp_path / "v3", VOCAB, {"encoder": {"model": "m"}, "corpus": "c"}, store_texts=True,
                       dense={"model": "dense-m", "dim": 4}, reorder="bp", block_size=4)
    build.add(ids, SparseBatch.from_scipy(docs), [f"title {i}" for i in ids], texts=[f"text {i}" for i in ids],
              dense=rng.normal(size=(80, 4)).astype(np.float32))
    build.finish()
    segment = open_single_segment(tmp_path / "v3")
    old = tmp_path / "v2"
    old.mkdir()
    arrays = {}
    format_1 = _format_1_term_postings(segment)
    for name, info in segment.meta["arrays"].items():
        if name.startswith("doc_id_hash"):
            continue  # version 2 had no id hash table
        if name in ("term_chunk_starts", "term_post_docs"):  # as segment format 1 stored them
            name = "term_entry_starts" if name == "term_chunk_starts" else name
            info = {"file": f"{name}.npy", "dtype": str(format_1[name].dtype), "shape": list(format_1[name].shape)}
            np.save(old / info["file"], format_1[name])
        else:
            shutil.copy(segment.path / info["file"], old / info["file"])
        arrays[name] = {"file": info["file"], "dtype": info["dtype"], "shape": info["shape"],
                        "sha256": _sha256(old / info["file"])}
    shutil.copytree(segment.path / "dense", old / "dense")
    dense_meta = json.loads((old / "dense" / "dense.json").read_text())
    dense_meta["sha256"] = _sha256(old / "dense" / "vectors.faiss")
    (old / "dense" / "dense.json").write_text(json.dumps(dense_meta))
    meta = {k: v for k, v in segment.meta.items() if k not in ("arrays", "files", "format", "format_version")}
    meta.update(format="lsr-index", format_version=2, arrays=arrays, doc_order="bp", bp_options={})
    (old / "meta.json").write_text(json.dumps(meta))
    records = [{"op": "add", "id": "new", "title": "t", "text": "x", "time": 0, "terms": [3, 7],
                "weights": [1.5, 0.5], "dense": [0.5, 0.5, 0.5, 0.5]},
               {"op": "delete", "id": "d4", "time": 0}]
    (old / "updates.log").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"op": "add", "id": "to')
    (old / ".serving.lock").write_text("")
    return old, segment


def test_upgrade_keeps_documents_vectors_and_logged_writes(tmp_path):
    old, segment = version_2_index(tmp_path)
    assert main(["index", "upgrade", str(old)]) == 0
    assert verify_index(old)[0] == []
    # format 1's term postings rewritten: equal to those of a fresh build
    upgraded_segment = Segment.open(next((old / "segments").iterdir()))
    for name in ("term_chunk_starts", "term_post_docs", "term_post_impacts", "term_entry_blocks"):
        assert np.array_equal(getattr(upgraded_segment.postings, name), getattr(segment.postings, name)), name
    assert sorted(p.name for p in old.iterdir()) == ["commit-0000000001.json", "deletes", "locks", "segments", "wal"]
    with LiveIndex(old) as live:
        assert live.num_docs == 80  # 80, one deleted, one added from the log
        assert not live.contains("d4") and live.document("new")["segment"] == "buffer"
        assert live.document("d9")["text"] == "text d9" and live.meta["encoder"] == {"model": "m"}
        terms, weights = np.array([3, 7, 11]), np.array([1.0, 2.0, 0.5], np.float32)
        ids, scores = live.search_sparse(terms, weights, 10, scorer="bmp")
        assert "new" in ids or len(ids) == 10
        upgraded = [i for i in ids if i != "new"]
        with LiveIndex(tmp_path / "v3", writer="never") as original:
            expected_ids, expected_scores = original.search_sparse(terms, weights, 20, scorer="exhaustive")
        expected = [(i, s) for i, s in zip(expected_ids, expected_scores) if i != "d4"][: len(upgraded)]
        assert upgraded == [i for i, _ in expected]
        assert live.search_dense(np.ones(4, np.float32), 3)[0]  # the faiss part came along
        live.flush()
        assert live.document("new")["segment"] != "buffer"
    assert main(["index", "upgrade", str(old)]) == 0  # a second run: already version 3, nothing to do


def test_a_damaged_version_2_index_is_not_upgraded(tmp_path):
    old, _ = version_2_index(tmp_path)
    path = old / "term_post_impacts.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert main(["index", "upgrade", str(old)]) == 1
    assert (old / "meta.json").is_file() and not list(old.glob("commit-*"))


def _as_format_1(directory):
    """Rewrite the one segment of an index as segment format 1 stored it, committed as such."""
    from lsr.index.commit import generations, read_commit, write_commit
    from lsr.index.format import describe_arrays, describe_file

    commit = read_commit(directory, generations(directory)[-1])
    (record,) = commit.segments
    path = directory / "segments" / record.name
    segment = Segment.open(path)
    for name, array in _format_1_term_postings(segment).items():
        np.save(path / f"{name}.npy", array)
    (path / "term_chunk_starts.npy").unlink()
    meta = json.loads((path / "meta.json").read_text())
    names = [name.replace("term_chunk_starts", "term_entry_starts") for name in meta["arrays"]]
    meta.update(format_version=1, arrays=describe_arrays(path, names))
    (path / "meta.json").write_text(json.dumps(meta, indent=2))
    changed = type(record)(record.name, record.num_docs, describe_file(path / "meta.json"), record.deletes)
    write_commit(directory, commit.successor(segments=(changed,)))


def _index_of_300(path, seed: int) -> None:
    """A committed index of 300 random documents d0..d299 (one segment, blocks of 4)."""
    rng = np.random.default_rng(seed)
    docs = sp.random(300, VOCAB, density=0.08, random_state=rng, format="csr", dtype=np.float32)
    docs.data += 0.1
    ids = [f"d{i}" for i in range(300)]
    build = IndexBuild(path, VOCAB, {"encoder": {"model": "m"}, "corpus": "c"}, block_size=4)
    build.add(ids, SparseBatch.from_scipy(docs), ids)
    build.finish()


def test_segments_of_format_1_are_rewritten_with_their_deletes(tmp_path, capsys):
    _index_of_300(tmp_path / "ix", 5)
    with LiveIndex(tmp_path / "ix") as live:
        live.delete("d7")
        live.flush()
        terms, weights = np.array([3, 7, 11, 40]), np.array([1.0, 2.0, 0.5, 0.25], np.float32)
        expected = {scorer: live.search_sparse(terms, weights, 50, scorer=scorer) for scorer in ("exhaustive", "bmp")}
    _as_format_1(tmp_path / "ix")
    with pytest.raises(IndexFormatError, match="segment format version 1.*lsr index upgrade"):
        LiveIndex(tmp_path / "ix", writer="never")
    assert main(["index", "upgrade", str(tmp_path / "ix")]) == 0
    assert "1 segment(s) of an older segment format rewritten" in capsys.readouterr().out
    assert verify_index(tmp_path / "ix")[0] == []
    with LiveIndex(tmp_path / "ix", writer="never") as live:
        assert live.num_docs == 299 and not live.contains("d7")
        for scorer, (expected_ids, expected_scores) in expected.items():
            found_ids, found_scores = live.search_sparse(terms, weights, 50, scorer=scorer)
            assert list(found_ids) == list(expected_ids) and list(found_scores) == list(expected_scores)
    assert len(list((tmp_path / "ix" / "segments").iterdir())) == 1  # the format 1 copy was collected
    assert main(["index", "upgrade", str(tmp_path / "ix")]) == 0  # nothing left to rewrite


def test_each_shard_of_a_sharded_index_is_upgraded(tmp_path, capsys):
    from lsr.index.sharded import open_index
    from lsr.index.shards import shard_directories
    from tests.test_shards import build_sharded

    build_sharded(tmp_path / "ix", 2, num_docs=200)
    terms, weights = np.array([1, 5, 9]), np.array([1.0, 0.5, 2.0], np.float32)
    with open_index(tmp_path / "ix") as index:
        expected = index.search_sparse(terms, weights, 20)
    for shard in shard_directories(tmp_path / "ix").values():
        _as_format_1(shard)
    assert main(["index", "upgrade", str(tmp_path / "ix")]) == 0
    assert capsys.readouterr().out.count("1 segment(s) of an older segment format rewritten") == 2
    with open_index(tmp_path / "ix") as index:
        found = index.search_sparse(terms, weights, 20)
    assert list(found[0]) == list(expected[0]) and list(found[1]) == list(expected[1])


@pytest.mark.parametrize("point", ["segment", "deletes", "commit"])
def test_an_upgrade_killed_at_any_step_finishes_when_run_again(tmp_path, point):
    """`lsr index upgrade` killed (SIGKILL) after writing the new segment, its delete file, or
    the commit: a second run finishes, nothing is lost, nothing is left behind."""
    import os
    import signal
    import subprocess
    import sys

    _index_of_300(tmp_path / "ix", 9)
    terms, weights = np.array([3, 7, 11, 40]), np.array([1.0, 2.0, 0.5, 0.25], np.float32)
    with LiveIndex(tmp_path / "ix") as live:
        live.delete("d7")
        live.flush()
        live.add_many([("logged", "", "", np.array([3, 7]), np.array([5.0, 5.0], np.float32), None)])
        expected = live.search_sparse(terms, weights, 50)
    _as_format_1(tmp_path / "ix")
    script = (
        "import sys\n"
        "import lsr.index.upgrade as U\n"
        "def pausing(fn):\n"
        "    def wrapper(*args, **kwargs):\n"
        "        result = fn(*args, **kwargs)\n"
        "        print('ready', flush=True)\n"
        "        sys.stdin.read()\n"
        "        return result\n"
        "    return wrapper\n"
        "name = {'segment': '_rewrite_format_1_segment', 'deletes': 'write_deletes', 'commit': 'write_commit'}[sys.argv[2]]\n"
        "setattr(U, name, pausing(getattr(U, name)))\n"
        "U.upgrade_index(sys.argv[1])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "ix"), point],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["index", "upgrade", str(tmp_path / "ix")]) == 0
    assert verify_index(tmp_path / "ix")[0] == []
    with LiveIndex(tmp_path / "ix", writer="never") as live:
        assert live.num_docs == 300 and not live.contains("d7") and live.contains("logged")
        found = live.search_sparse(terms, weights, 50)
    assert list(found[0]) == list(expected[0]) and list(found[1]) == list(expected[1])
    segments = list((tmp_path / "ix" / "segments").iterdir())
    assert len(segments) == 1 and not segments[0].name.startswith(".")
    assert [p.name.split(".")[0] for p in (tmp_path / "ix" / "deletes").iterdir()] == [segments[0].name]


def test_a_cached_index_of_an_older_format_is_upgraded_when_reused(tmp_path, capsys):
    """Evaluation runs and mining reuse the index they built before (`upgrade_if_needed`): one
    of an older segment format is rewritten in place, a current one is only read."""
    from lsr.index.directory import WriteLock
    from lsr.index.upgrade import upgrade_if_needed

    _index_of_300(tmp_path / "ix", 3)
    lock = WriteLock.acquire(tmp_path / "ix")  # another writer holds the index: a current one needs no lock
    try:
        assert upgrade_if_needed(tmp_path / "ix") == 0
    finally:
        lock.release()
    _as_format_1(tmp_path / "ix")
    assert upgrade_if_needed(tmp_path / "ix") == 1
    assert "1 segment(s) of an older segment format rewritten" in capsys.readouterr().err
    with LiveIndex(tmp_path / "ix", writer="never") as live:
        assert live.num_docs == 300
