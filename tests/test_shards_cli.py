"""A sharded index end to end: `lsr index --shards`, verify, search, merge, and the service
over it (the bundled SPLADE model, a 200-document SciFact subset)."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lsr.index.shards import read_manifest, shard_of
from lsr.index.sharded import ShardedIndex
from lsr.service.app import create_app
from lsr.service.settings import Settings
from tests.test_cli import lsr

KEY = "k-123"


@pytest.mark.slow  # about a minute; the default suite covers shards in-process (test_shards) and on Ray
def test_sharded_index_through_cli_and_service(tmp_path, scifact_subset, encoder):
    index_dir = tmp_path / "ix"
    out = lsr("index", scifact_subset / "corpus.jsonl", "--out", index_dir, "--shards", "3")
    assert out.returncode == 0, out.stderr
    assert "indexed 200 documents" in out.stdout and "(3 shards)" in out.stdout
    assert read_manifest(index_dir).shards == ("shard-0000", "shard-0001", "shard-0002")

    out = lsr("index", "verify", index_dir)
    assert out.returncode == 0 and out.stdout.count("every checksum and structure check passed") == 3

    lines = (scifact_subset / "corpus.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    out = lsr("search", index_dir, first["title"], "-k", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[1] == first["_id"]

    with ShardedIndex(index_dir, writer="never") as index:
        for line in lines:
            doc_id = json.loads(line)["_id"]
            owner = shard_of(doc_id, 3)
            assert [live.contains(doc_id) for live in index.shards] == [s == owner for s in range(3)]
        terms, weights = encoder.encode_queries([first["title"]]).row(0)
        before = index.search_sparse(terms, weights, 10)

    settings = Settings(index_dir=index_dir, api_keys=KEY, warm_up=False, flush_seconds=3600)
    with TestClient(create_app(settings)) as client:
        found = client.post("/search", json={"query": first["title"], "k": 10}).json()["hits"]
        assert [h["id"] for h in found] == before[0]
        np.testing.assert_allclose([h["score"] for h in found], before[1], rtol=1e-6)
        added = client.post("/documents", headers={"X-API-Key": KEY},
                            json={"id": "new-doc", "title": "Zebrafish fin regeneration", "text": "blastema"})
        assert added.status_code == 200
        assert client.get("/documents/new-doc").json()["title"] == "Zebrafish fin regeneration"
        hits = client.post("/search", json={"query": "zebrafish fin regeneration blastema", "k": 1}).json()["hits"]
        assert hits[0]["id"] == "new-doc"
        assert client.delete(f"/documents/{first['_id']}", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get(f"/documents/{first['_id']}").status_code == 404
        stats = client.get("/stats").json()
        assert stats["documents"] == 200 and [s["name"] for s in stats["shards"]] == list(read_manifest(index_dir).shards)
        explained = client.get("/explain", params={"query": "zebrafish", "id": "new-doc"})
        assert explained.status_code == 200 and explained.json()["terms"]

    out = lsr("index", "merge", index_dir)
    assert out.returncode == 0 and out.stdout.count("merged ") == 3
    with ShardedIndex(index_dir, writer="never") as index:
        assert index.num_docs == 200 and index.contains("new-doc") and not index.contains(first["_id"])
