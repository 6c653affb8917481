"""The Python API (`lsr.api`) with the bundled models on real SciFact documents, and the
README's example run as it is written."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import lsr
from lsr.index.live import DocumentNotFound
from lsr.api import Hit, SparseIndex, documents_from

README = Path(__file__).resolve().parents[1] / "README.md"


def scifact_rows(scifact_dir: Path, count: int) -> list[dict]:
    with gzip.open(scifact_dir / "corpus.jsonl.gz", "rt") as source:
        return [json.loads(next(source)) for _ in range(count)]


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The first Python block of the README, run as it is (in a scratch directory)."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None and block.group(1).count("\n") <= 14  # the short example
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    first = scope["index"].search("what makes proteins?", k=1)
    assert first[0].id == "d1"
    assert [h.id for h in scope["results"][1]][:1] == ["d1"] and "d2" not in {h.id for r in scope["results"] for h in r}
    assert len(scope["index"]) == 2
    scope["index"].close()
    assert lsr.SparseIndex is SparseIndex


def test_build_search_add_delete_reopen(tmp_path, scifact_dir, encoder):
    rows = scifact_rows(scifact_dir, 120)
    docs = [{"_id": r["_id"], "title": r["title"], "text": r["text"]} for r in rows[:100]]
    path = tmp_path / "ix"
    with SparseIndex.build(docs, path=path, encoder=encoder) as index:
        assert len(index) == 100
        query = rows[7]["title"]
        hits = index.search(query, k=5, return_texts=True)
        assert isinstance(hits[0], Hit) and hits[0].id == rows[7]["_id"]
        assert hits[0].title == rows[7]["title"] and hits[0].text == rows[7]["text"]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert index.search(query, k=5)[0].text is None
        many = index.search([query, rows[3]["title"]], k=3)
        assert [m[0].id for m in many] == [rows[7]["_id"], rows[3]["_id"]]
        assert index.search([], k=3) == []
        # the same ranking as the command line's path (our encoder, then the index directly)
        terms, weights = encoder.encode_queries([query]).row(0)
        from lsr.index.sharded import open_index

        assert index.add([(r["_id"], r["title"], r["text"]) for r in rows[100:110]]) == 10
        assert index.search(rows[105]["title"], k=1)[0].id == rows[105]["_id"]
        assert index.delete([rows[7]["_id"], rows[105]["_id"]]) == 2
        assert rows[7]["_id"] not in {h.id for h in index.search(query, k=10)}
        with pytest.raises(DocumentNotFound):
            index.delete("no-such-id")
        assert len(index) == 108
    with SparseIndex.open(path, writable=False) as again:  # the recorded encoder, loaded again
        assert len(again) == 108
        assert again.search(rows[3]["title"], k=1)[0].id == rows[3]["_id"]
        with open_index(path, writer="never") as raw:
            ids, scores = raw.search_sparse(terms, weights, 5)
        assert [h.id for h in again.search(query, k=5)] == list(ids)
        assert np.allclose([h.score for h in again.search(query, k=5)], scores)


def test_texts_alone_and_bad_input(tmp_path, encoder):
    index = SparseIndex.build(["cells make proteins", "the sky is blue"], path=tmp_path / "ix", encoder=encoder)
    assert index.search("protein", k=1)[0].id == "0"
    with pytest.raises(ValueError, match="mode must be one of"):
        index.search("x", mode="fuzzy")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search("x", k=0)
    with pytest.raises(TypeError, match="queries must be"):
        index.search([1, 2])
    with pytest.raises(ValueError, match="needs a dense part"):
        index.search("x", mode="hybrid")
    with pytest.raises(TypeError, match="bare text"):
        index.add(["no id here"])
    with pytest.raises(TypeError, match="document 1 needs an 'id'"):
        list(documents_from([{"id": "a", "text": "x"}, {"text": "y"}]))
    with pytest.raises(TypeError, match="iterable of documents"):
        list(documents_from("one text"))
    with pytest.raises(TypeError, match="encoder must be"):
        SparseIndex.build(["x"], path=tmp_path / "other", encoder=42)
    index.close()


def test_dense_and_hybrid_modes(tmp_path, scifact_dir, encoder):
    rows = scifact_rows(scifact_dir, 60)
    with SparseIndex.build([{"id": r["_id"], "title": r["title"], "text": r["text"]} for r in rows],
                           path=tmp_path / "ix", encoder=encoder, dense=True) as index:
        query = rows[11]["title"]
        for mode in ("sparse", "dense", "hybrid"):
            hits = index.search(query, k=3, mode=mode)
            assert len(hits) == 3 and hits[0].id == rows[11]["_id"], mode
        assert index.search(query, k=3, mode="hybrid", fusion="convex")[0].id == rows[11]["_id"]
        index.add([{"id": "new", "text": rows[11]["text"]}])  # encoded for both parts
        assert "new" in {h.id for h in index.search(query, k=3, mode="dense")}


def test_a_sentence_transformers_sparse_encoder_builds_and_searches_alike(tmp_path, scifact_dir, encoder):
    """The bundled model loaded by sentence-transformers gives the index ours gives (vectors
    equal within 1e-4, so the same rankings), and the index reopens with it by name."""
    from sentence_transformers import SparseEncoder

    from lsr.encoders.models import bundled_splade_path

    model = SparseEncoder(str(bundled_splade_path()), device="cpu")
    model.max_seq_length = encoder.doc_max_length
    rows = scifact_rows(scifact_dir, 40)
    docs = [{"id": r["_id"], "title": r["title"], "text": r["text"]} for r in rows]
    theirs = SparseIndex.build(docs, path=tmp_path / "st", encoder=model, reorder="none")
    ours = SparseIndex.build(docs, path=tmp_path / "ours", encoder=encoder, reorder="none")
    assert theirs.encoder.vocab_size == encoder.vocab_size
    a, b = theirs.encoder.encode_documents([r["text"] for r in rows[:3]]), encoder.encode_documents(
        [r["text"] for r in rows[:3]])
    assert np.abs(a.to_scipy() - b.to_scipy()).max() < 1e-4
    for r in rows[:5]:
        assert [h.id for h in theirs.search(r["title"], k=3)] == [h.id for h in ours.search(r["title"], k=3)]
    theirs.close()
    with SparseIndex.open(tmp_path / "st") as reopened:
        assert type(reopened.encoder).__name__ == "SentenceTransformersSparse"
        assert reopened.search(rows[0]["title"], k=1)[0].id == rows[0]["_id"]
    ours.close()
    shutil.rmtree(tmp_path / "st")
