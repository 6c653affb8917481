"""`lsr index upgrade`: an index of format version 2 (one directory) becomes segments and commits."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import scipy.sparse as sp

from lsr.index.build import IndexBuild
from lsr.index.check import verify_index
from lsr.index.live import LiveIndex, open_single_segment
from lsr.index.sparse_batch import SparseBatch
from lsr.cli import main

VOCAB = 120


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    for name, info in segment.meta["arrays"].items():
        if name.startswith("doc_id_hash"):
            continue  # version 2 had no id hash table
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
