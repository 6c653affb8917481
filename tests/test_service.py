"""The search service over a real small index (bundled SPLADE and MiniLM), through TestClient."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lsr.index.live import open_single_segment
from lsr.index.fusion import fuse
from lsr.index.scorers.planner import search as planner_search
from lsr.service.app import create_app
from lsr.service.settings import Settings

KEY = "test-key-123"


@pytest.fixture
def settings(served_index):
    return Settings(index_dir=served_index, api_keys=KEY, warm_up=False, max_body_bytes=20_000,
                    max_query_chars=1000, max_batch_queries=4, flush_seconds=3600)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _search(client, **body):
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_sparse_search_equals_the_index_scorer(client, served_index, encoder):
    body = _search(client, query="vitamin D deficiency and bone density", k=10)
    terms, weights = encoder.encode_queries(["vitamin D deficiency and bone density"]).row(0)
    index = open_single_segment(served_index)
    docs, scores = planner_search(index, terms, weights, 10)
    assert [hit["id"] for hit in body["hits"]] == [index.doc_ids[d] for d in docs]
    np.testing.assert_allclose([hit["score"] for hit in body["hits"]], scores, rtol=1e-6)
    assert body["hits"][0]["title"] == index.doc_titles[docs[0]]
    assert body["timings"]["sparse_search_ms"] > 0 and body["timings"]["total_ms"] >= body["timings"]["sparse_search_ms"]
    assert body["truncated"] is False and body["query_terms"] == len(terms)


def test_hybrid_is_the_fusion_of_sparse_and_dense(client):
    query = "microRNA expression in cancer cells"
    sparse = _search(client, query=query, k=100, mode="sparse")
    dense = _search(client, query=query, k=100, mode="dense")
    lists = (([h["id"] for h in sparse["hits"]], [h["score"] for h in sparse["hits"]]),
             ([h["id"] for h in dense["hits"]], [h["score"] for h in dense["hits"]]))
    for fusion in ("adaptive", "rrf"):  # the default, then another
        hybrid = _search(client, query=query, k=10, mode="hybrid", **({} if fusion == "adaptive" else {"fusion": fusion}))
        expected_ids, expected_scores = fuse(*lists, method=fusion, limit=10)
        assert [h["id"] for h in hybrid["hits"]] == expected_ids
        np.testing.assert_allclose([h["score"] for h in hybrid["hits"]], expected_scores)
        assert hybrid["timings"]["dense_search_ms"] > 0 and hybrid["timings"]["fusion_ms"] > 0
    convex = _search(client, query=query, k=5, mode="hybrid", fusion="convex", fusion_weight=0.7,
                     normalization="zscore")
    assert len(convex["hits"]) == 5


def test_integral_floats_are_integers(client):
    assert len(_search(client, query="cancer", k=3.0)["hits"]) == 3


def test_batch_search(client):
    body = client.post("/search/batch", json={"searches": [{"query": "cancer"}, {"query": "cells", "k": 3,
                                                                                   "mode": "dense"}]}).json()
    assert [len(r["hits"]) for r in body["results"]] == [10, 3]


@pytest.mark.parametrize("body, fragment", [
    ({"query": "x", "k": 0}, "greater than or equal to 1"),
    ({"query": "x", "k": 1001}, "less than or equal to 1000"),
    ({"query": "x", "colour": "red"}, "Extra inputs are not permitted"),
    ({"query": ""}, "at least 1 character"),
    ({"query": "x", "mode": "fuzzy"}, "sparse"),
    ({"query": "x", "alpha": 0}, "greater than 0"),
    ({"query": "x", "k": "10"}, "valid integer"),
    ({"query": "x", "highlight": 1}, "valid boolean"),
])
def test_bad_search_requests_get_clear_422s(client, body, fragment):
    response = client.post("/search", json=body)
    assert response.status_code == 422 and fragment in response.text


def test_limits(client):
    assert client.post("/search", json={"query": "a" * 1001}).status_code == 413
    big = client.post("/search", content=b'{"query": "' + b"a" * 30_000 + b'"}',
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger than 20000 bytes" in big.json()["detail"]
    chunked = client.post("/search", content=iter([b'{"query": "', b"a" * 30_000, b'"}']),
                          headers={"content-type": "application/json"})  # no Content-Length: counted as it streams
    assert chunked.status_code == 413
    assert 'route="unmatched",status="413"' in client.get("/metrics").text
    long = _search(client, query=" ".join(["protein"] * 120))
    assert long["truncated"] is True and long["hits"]
    assert client.post("/search/batch", json={"searches": [{"query": "x"}] * 33}).status_code == 422
    assert client.post("/search/batch", json={"searches": [{"query": "x"}] * 5}).status_code == 413


def test_explain_sums_to_the_search_score(client):
    query = "stem cells differentiation"
    for mode in ("sparse", "hybrid"):
        hit = _search(client, query=query, k=3, mode=mode, highlight=True)["hits"][0]
        explained = client.get("/explain", params={"query": query, "id": hit["id"]}).json()
        contributions = [t["contribution"] for t in explained["terms"]]
        assert contributions == sorted(contributions, reverse=True)
        assert hit["matched_terms"] == [t["token"] for t in explained["terms"]]
        if mode == "sparse":
            assert explained["score"] == pytest.approx(hit["score"], rel=1e-5)
    assert client.get("/explain", params={"query": query, "id": "nope"}).status_code == 404


def test_writes_need_the_key(client):
    document = {"id": "new-1", "title": "t", "text": "quokka marsupial island"}
    missing = client.post("/documents", json=document)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "ApiKey"
    assert client.post("/documents", json=document, headers={"X-API-Key": "wrong"}).status_code == 403
    assert client.delete("/documents/4983", headers={"X-API-Key": "wrong"}).status_code == 403
    assert client.delete("/documents/4983").status_code == 401
    assert client.get("/documents/4983").status_code == 200  # nothing was deleted


def test_no_configured_key_disables_writes(served_index):
    with TestClient(create_app(Settings(index_dir=served_index, warm_up=False))) as plain:
        response = plain.post("/documents", json={"id": "a", "text": "b"}, headers={"X-API-Key": "anything"})
        assert response.status_code == 403 and "disabled" in response.json()["detail"]


def test_add_search_delete_and_restart(settings, served_index):
    headers = {"X-API-Key": KEY}
    with TestClient(create_app(settings)) as client:
        added = client.post("/documents", headers=headers,
                            json={"id": "quokka-1", "title": "Quokkas", "text": "The quokka is a small marsupial of Rottnest Island."})
        assert added.json() == {"id": "quokka-1", "status": "added"}
        for mode in ("sparse", "dense", "hybrid"):
            assert _search(client, query="quokka marsupial", k=3, mode=mode)["hits"][0]["id"] == "quokka-1"
        main_id = _search(client, query="cancer", k=1)["hits"][0]["id"]
        replaced = client.post("/documents", headers=headers, json={"id": main_id, "text": "replaced by a note on kangaroos"})
        assert replaced.json()["status"] == "replaced"
        assert client.get(f"/documents/{main_id}").json()["segment"] == "buffer"
        assert client.delete("/documents/4983", headers=headers).json() == {"id": "4983", "status": "deleted"}
        assert client.get("/documents/4983").status_code == 404
        assert client.delete("/documents/4983", headers=headers).status_code == 404
        stats = client.get("/stats").json()
    assert stats["documents"] == 200 and stats["buffered_writes"] == 3 and stats["buffer_documents"] == 2
    with TestClient(create_app(settings)) as restarted:  # replayed from the write-ahead log
        assert restarted.get("/documents/quokka-1").json()["title"] == "Quokkas"
        assert restarted.get("/documents/4983").status_code == 404
        assert "kangaroos" in restarted.get(f"/documents/{main_id}").json()["text"]
        assert restarted.get("/stats").json() == stats


def test_the_background_thread_flushes_acknowledged_writes(settings):
    headers = {"X-API-Key": KEY}
    quick = settings.model_copy(update={"flush_seconds": 0.2, "flush_check_seconds": 0.05})
    with TestClient(create_app(quick)) as client:
        client.post("/documents", headers=headers, json={"id": "wombat", "text": "Wombats dig burrows."})
        deadline = time.monotonic() + 20
        while client.get("/documents/wombat").json()["segment"] == "buffer" and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = client.get("/stats").json()
    assert stats["buffered_writes"] == 0 and len(stats["segments"]) == 2 and stats["writer"] is True
    assert stats["documents"] == 201


def test_ids_with_slashes_and_unicode(client):
    headers = {"X-API-Key": KEY}
    for doc_id in ("a/b/c", "ünï cödé"):
        assert client.post("/documents", headers=headers, json={"id": doc_id, "text": "odd id"}).status_code == 200
        assert client.get(f"/documents/{doc_id}").json()["id"] == doc_id
        assert client.delete(f"/documents/{doc_id}", headers=headers).status_code == 200


def test_bad_documents_are_refused(client):
    headers = {"X-API-Key": KEY}
    assert client.post("/documents", headers=headers, json={"id": "", "text": "x"}).status_code == 422
    assert client.post("/documents", headers=headers, json={"id": "a", "text": ""}).status_code == 422
    assert client.post("/documents", headers=headers, json={"id": "a", "text": "x", "extra": 1}).status_code == 422
    assert client.post("/documents", headers=headers, json={"id": "a\nb", "text": "x"}).status_code == 422


def test_health_stats_metrics_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "documents": 200}
    stats = client.get("/stats").json()
    assert stats["commit"] >= 1 and stats["dense"]["dim"] == 384 and stats["postings"] > 0
    assert [s["documents"] for s in stats["segments"]] == [200]
    _search(client, query="cancer")
    client.get("/documents/does-not-exist")
    metrics = client.get("/metrics").text
    assert 'lsr_requests_total{method="POST",route="/search",status="200"}' in metrics
    assert 'route="/documents/{doc_id:path}",status="404"' in metrics
    assert "lsr_request_duration_seconds_bucket" in metrics and "lsr_documents 200.0" in metrics
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text


def test_dense_mode_needs_a_dense_index(tmp_path, encoder):
    from lsr.data.loaders import Document
    from lsr.indexing import index_corpus

    documents = [Document(f"d{i}", "", text) for i, text in enumerate(["cancer cells", "bone density", "vitamin D"])]
    index_corpus(documents, encoder, tmp_path / "sparse-only", "tiny", show_progress=False)
    with TestClient(create_app(Settings(index_dir=tmp_path / "sparse-only", warm_up=False))) as client:
        response = client.post("/search", json={"query": "cancer", "mode": "dense"})
        assert response.status_code == 409 and "dense index" in response.json()["detail"]
        assert client.post("/search", json={"query": "cancer"}).status_code == 200


def test_api_keys_never_show(settings):
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


def test_warm_up_runs(settings):
    with TestClient(create_app(settings.model_copy(update={"warm_up": True}))) as client:
        assert client.get("/health").status_code == 200


def test_a_hit_deleted_while_results_are_shaped_is_left_out(client, monkeypatch):
    engine = client.app.state.engine
    first = _search(client, query="cancer", k=3)["hits"]
    search_sparse = engine.index.search_sparse

    def search_then_delete(*args, **kwargs):
        hits = search_sparse(*args, **kwargs)
        engine.index.delete(first[0]["id"])  # another request deletes it in between
        return hits

    monkeypatch.setattr(engine.index, "search_sparse", search_then_delete)
    hits = _search(client, query="cancer", k=3, highlight=True)["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in first[1:]]


def test_query_encoding_keeps_its_thread_count_after_a_parallel_numba_kernel(served_index_template):
    """Numba's OpenMP layer sets the launching thread's OpenMP count (PyTorch's too): a BP
    reordering in the warm-up moved the service's one-thread encoder to every core."""
    import torch

    from lsr.index.commit import read_newest_commit
    from lsr.service.encoders import LocalEncoders
    from lsr.service.engine import warm_kernels

    encoders = LocalEncoders(read_newest_commit(served_index_template).settings, torch_threads=1, query_backend="torch")
    warm_kernels()  # builds a tiny index with BP: a parallel kernel
    encoders.encode_sparse("vitamin D")
    assert torch.get_num_threads() == 1


def test_a_precision_the_index_cannot_serve_stops_the_start(tmp_path):
    """LSR_PRECISION=16-bit over an index without 16-bit impacts: a clear error when the service
    starts (it names the segment), not a 5xx on every search; the index is left unlocked."""
    import scipy.sparse as sp

    from lsr.index.build import build_index
    from lsr.index.sparse_batch import SparseBatch
    from lsr.service.engine import SearchEngine

    docs = sp.random(20, 30, density=0.2, random_state=np.random.default_rng(0), format="csr", dtype=np.float32)
    build_index(tmp_path / "ix", [([f"d{i}" for i in range(20)], SparseBatch.from_scipy(docs), None)], 30,
                fine_impacts=False)
    with pytest.raises(ValueError, match="16-bit impacts, which segment .* does not have"):
        SearchEngine(Settings(index_dir=tmp_path / "ix", precision="16-bit"))
    from lsr.index.live import LiveIndex

    with LiveIndex(tmp_path / "ix", writer="required"):  # the failed start released the write lock
        pass


def test_documents_encoded_while_queries_are_encode_the_same(served_index_template):
    """The service encodes queries (cut at 64 tokens, counted untruncated) and documents (cut at
    256) at once from its threads; through one tokenizer whose settings each call changes, a
    document came out cut at the query's length, or uncut and too long for the dense model (a
    500 under load). Documents encoded beside a thread of queries equal those encoded alone."""
    import sys
    import threading

    from lsr.index.commit import read_newest_commit
    from lsr.service.encoders import LocalEncoders

    encoders = LocalEncoders(read_newest_commit(served_index_template).settings, torch_threads=1, query_backend="torch")
    texts = [" ".join(f"protein{i} cell {n} gene" for i in range(150 + 40 * n)) for n in range(4)]

    def beside_queries(encode_query, encode_document, rounds: int) -> tuple[list, list]:
        alone = [encode_document(text) for text in texts]
        stop = threading.Event()

        def queries() -> None:
            while not stop.is_set():
                encode_query(texts[3])  # a long query: cut for encoding, counted whole

        threads = [threading.Thread(target=queries) for _ in range(3)]
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # hand the GIL over often, as a loaded server does
        for thread in threads:
            thread.start()
        try:
            beside = [encode_document(text) for _ in range(rounds) for text in texts]
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            sys.setswitchinterval(switch_interval)
        return alone, beside

    alone, beside = beside_queries(encoders.encode_sparse, lambda t: encoders.encoder.encode_documents([t]).row(0), 20)
    wrong = [n for n, (terms, weights) in enumerate(beside)
             if not (np.array_equal(terms, alone[n % 4][0]) and np.allclose(weights, alone[n % 4][1]))]
    assert wrong == [], f"{len(wrong)} of {len(beside)} sparse document vectors differ"
    alone, beside = beside_queries(encoders.encode_dense, lambda t: encoders.dense_encoder.encode_documents([t])[0], 5)
    wrong = [n for n, vector in enumerate(beside) if not np.allclose(vector, alone[n % 4], rtol=1e-5, atol=1e-6)]
    assert wrong == [], f"{len(wrong)} of {len(beside)} dense document vectors differ"
