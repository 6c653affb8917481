"""Sharded search on a real local Ray Serve (two CPUs): the index the Ray job built (two
shards), served with the same API as one process, equal to one index over the same
documents; writes to the owning shard; replicas killed under load."""

import os
import shutil
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from lsr.index.live import LiveIndex
from lsr.index.shards import shard_of
from lsr.service.app import create_app
from lsr.service.settings import Settings

KEY = "ray-key-1"
QUERIES = ("stem cell differentiation", "vitamin D and bone density", "antibiotic resistance in bacteria",
           "protein folding", "cancer immunotherapy outcomes")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def serve_port(ray_cluster):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


def deploy(index_dir, port: int, replicas: int, **settings) -> httpx.Client:
    from lsr.service.ray_serve import serve_on_ray

    # No warm-up: each replica compiles (or loads) its kernels on its first search instead of
    # all of them at start, which on a fresh machine's empty Numba cache costs minutes.
    config = Settings(index_dir=index_dir, api_keys=KEY, flush_seconds=3600, warm_up=False, **settings)
    serve_on_ray(index_dir, config, replicas=replicas, port=port, blocking=False)
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory, serve_port, ray_index_1000):
    """The Ray-built index (a copy: the tests write) on Serve, two replicas per shard."""
    path = tmp_path_factory.mktemp("served") / "ix"
    shutil.copytree(ray_index_1000[0], path)
    with deploy(path, serve_port, replicas=2) as client:
        yield client, path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, single_index_1000):
    """The one-process service over one index (not sharded) of the same documents."""
    path = tmp_path_factory.mktemp("single-served") / "ix"
    shutil.copytree(single_index_1000, path)
    with TestClient(create_app(Settings(index_dir=path, warm_up=False, flush_seconds=3600))) as client:
        yield client


def assert_same_hits(got: list[dict], expected: list[dict], rtol: float) -> None:
    """Same scores rank by rank; the same documents, up to their order among equal scores."""
    np.testing.assert_allclose([h["score"] for h in got], [h["score"] for h in expected], rtol=rtol)
    for hit in got:
        tied = {e["id"] for e in expected if np.isclose(e["score"], hit["score"], rtol=rtol)}
        assert hit["id"] in tied


def test_search_over_serve_equals_one_index(served, one_process):
    client, _ = served
    for query in QUERIES:
        for mode, k in (("sparse", 10), ("sparse", 100), ("dense", 10), ("hybrid", 10)):
            body = {"query": query, "mode": mode, "k": k, "include_text": True}
            got, expected = client.post("/search", json=body), one_process.post("/search", json=body)
            assert got.status_code == 200, got.text
            got, expected = got.json(), expected.json()
            assert len(got["hits"]) == len(expected["hits"]) == k and not got["partial"]
            # Sparse scores are the same numbers (one fixed quantisation scale); dense vectors
            # differ in the last float bits (encoded with another thread count).
            assert_same_hits(got["hits"], expected["hits"], rtol=1e-12 if mode == "sparse" else 1e-5)
            # Titles and texts came with the shards' hits (sparse, dense) or in a second round (hybrid).
            stored = {h["id"]: (h["title"], h["text"]) for h in expected["hits"]}
            assert all(stored[h["id"]] == (h["title"], h["text"]) for h in got["hits"] if h["id"] in stored)
    batch = client.post("/search/batch", json={"searches": [{"query": q, "k": 5} for q in QUERIES[:3]]})
    assert batch.status_code == 200
    for query, result in zip(QUERIES, batch.json()["results"]):
        single = client.post("/search", json={"query": query, "k": 5}).json()
        assert [h["id"] for h in result["hits"]] == [h["id"] for h in single["hits"]]


def test_documents_explain_and_openapi_across_shards(served, one_process):
    client, _ = served
    hits = client.post("/search", json={"query": QUERIES[0], "k": 50, "include_text": True}).json()["hits"]
    by_shard = {shard_of(h["id"], 2): h for h in hits}
    assert set(by_shard) == {0, 1}
    for hit in by_shard.values():
        document = client.get(f"/documents/{hit['id']}")
        assert document.status_code == 200 and document.json()["text"] == hit["text"]
        explained = client.get("/explain", params={"query": QUERIES[0], "id": hit["id"]}).json()
        assert explained["score"] == pytest.approx(hit["score"], rel=1e-9)
        assert explained == one_process.get("/explain", params={"query": QUERIES[0], "id": hit["id"]}).json()
    assert client.get("/documents/no-such-doc").status_code == 404
    stats = client.get("/stats").json()
    assert stats["documents"] == 1000 and [s["name"] for s in stats["shards"]] == ["shard-0000", "shard-0001"]
    assert client.get("/openapi.json").json() == one_process.get("/openapi.json").json()


def test_writes_go_to_the_shard_that_owns_the_id(served):
    client, path = served
    added = client.post("/documents", headers={"X-API-Key": KEY},
                        json={"id": "ray-new-1", "title": "Axolotl limb regeneration", "text": "blastema cells"})
    assert added.status_code == 200 and added.json()["status"] == "added"
    top = client.post("/search", json={"query": "axolotl limb regeneration blastema", "k": 1}).json()["hits"]
    assert top[0]["id"] == "ray-new-1"
    owner = shard_of("ray-new-1", 2)
    for shard in range(2):  # acknowledged: in the owning shard's log, on disk, and nowhere else
        with LiveIndex(path / f"shard-{shard:04d}", writer="never") as live:
            assert live.contains("ray-new-1") == (shard == owner)
    assert client.delete("/documents/ray-new-1", headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/documents/ray-new-1").status_code == 404
    assert client.post("/documents", headers={"X-API-Key": "wrong"},
                       json={"id": "x", "title": "", "text": "y"}).status_code == 403


def shard_pid(name: str) -> int:
    from ray import serve

    return serve.get_deployment_handle(name, app_name="lsr").pid.remote().result()


def load(client: httpx.Client, seconds: float, threads: int = 4) -> dict:
    """Searches from ``threads`` clients for ``seconds``: counts of answers by status."""
    counts: dict = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client_loop(n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            try:
                status = client.post("/search", json={"query": QUERIES[i % len(QUERIES)], "k": 10}).status_code
            except httpx.HTTPError as error:
                status = type(error).__name__
            with lock:
                counts[status] = counts.get(status, 0) + 1
            i += 1

    workers = [threading.Thread(target=client_loop, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts


def write_load(client: httpx.Client, seconds: float, acknowledged: list, failed: list) -> None:
    """Adds of new documents for ``seconds``: the ids answered 200 go to ``acknowledged``."""
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        doc_id = f"kill-write-{n}"
        try:
            status = client.post("/documents", headers={"X-API-Key": KEY},
                                 json={"id": doc_id, "title": f"written {n}", "text": "limb regeneration"}).status_code
        except httpx.HTTPError as error:
            status = type(error).__name__
        (acknowledged if status == 200 else failed).append(doc_id if status == 200 else status)
        n += 1


def test_a_replica_killed_under_load_fails_no_request_and_loses_no_write(served):
    client, path = served
    acknowledged, failed = [], []
    writer = threading.Thread(target=write_load, args=(client, 8.0, acknowledged, failed))
    killer = threading.Timer(2.0, lambda: os.kill(shard_pid("shard-0000"), signal.SIGKILL))
    writer.start()
    killer.start()
    counts = load(client, seconds=8.0)
    killer.join()
    writer.join()
    print(f"two replicas, one killed under load: searches {counts}, adds {len(acknowledged)} acknowledged, "
          f"failed {failed}")
    assert set(counts) == {200} and counts[200] > 20, counts
    assert not failed and len(acknowledged) > 5
    for doc_id in acknowledged:  # every acknowledged add answers, and is on disk in its shard
        assert client.get(f"/documents/{doc_id}").status_code == 200, doc_id
    owners = {shard: [d for d in acknowledged if shard_of(d, 2) == shard] for shard in range(2)}
    for shard, ids in owners.items():
        with LiveIndex(path / f"shard-{shard:04d}", writer="never") as live:
            assert all(live.contains(doc_id) for doc_id in ids)


def test_the_only_replica_killed_gives_503_naming_it_or_a_partial_answer(tmp_path, serve_port, ray_index_1000):
    shutil.copytree(ray_index_1000[0], tmp_path / "ix")
    with deploy(tmp_path / "ix", serve_port, replicas=1, shard_timeout_seconds=1.5) as client:
        assert client.post("/search", json={"query": QUERIES[1], "k": 10}).status_code == 200
        os.kill(shard_pid("shard-0001"), signal.SIGKILL)
        refused = client.post("/search", json={"query": QUERIES[1], "k": 10})
        assert refused.status_code == 503 and "shard-0001" in refused.json()["detail"], refused.text
        partial = client.post("/search", json={"query": QUERIES[1], "k": 10, "allow_partial": True})
        assert partial.status_code == 200, partial.text
        body = partial.json()
        assert body["partial"] and body["missing_shards"] == ["shard-0001"]
        assert body["hits"] and all(shard_of(h["id"], 2) == 0 for h in body["hits"])
        deadline = time.monotonic() + 60  # Serve starts a new replica
        while client.post("/search", json={"query": QUERIES[1], "k": 10}).status_code != 200:
            assert time.monotonic() < deadline, "the shard's replica did not come back"
            time.sleep(1)


def test_remote_merge_keeps_the_documents_the_shards_sent():
    from lsr.index.shards import merge_top_k
    from lsr.service.ray_serve import RemoteShards

    first = (["a", "b"], np.array([3.0, 1.0]), {"a": {"title": "A"}, "b": {"title": "B"}})
    second = (["c", "d"], np.array([2.0, 0.5]))  # a shard asked for no documents
    hits = RemoteShards._merge([first, None, second], 3)
    ids, scores = hits
    expected = merge_top_k([first[:2], second], 3)
    assert ids == expected[0] == ["a", "c", "b"] and np.array_equal(scores, expected[1])
    assert hits.documents == {"a": {"title": "A"}, "b": {"title": "B"}}


def test_an_encoder_that_never_answers_is_a_503_not_a_crash():
    from lsr.service.errors import EncoderUnavailable
    from lsr.service.ray_serve import RemoteEncoders

    class Response:
        def __init__(self, value):
            self.value = value

        def result(self, timeout_s):
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

    class Method:
        def __init__(self, value):
            self.value = value

        def remote(self, *args):
            return Response(self.value)

    class Handle:
        info = Method({"has_dense": False, "vocab_size": 5})
        encode_sparse = Method(TimeoutError("no replica"))

    encoders = RemoteEncoders(Handle(), timeout=0.1)
    encoders.min_timeout = 0.3
    started = time.monotonic()
    with pytest.raises(EncoderUnavailable) as raised:
        encoders.encode_sparse("a query")
    assert raised.value.status == 503 and 0.3 <= time.monotonic() - started < 5
