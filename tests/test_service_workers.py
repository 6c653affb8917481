"""Two uvicorn workers share one write-ahead log: a write through one is read through the other (slow)."""

from __future__ import annotations

import http.client
import json

import pytest

from lsr.eval.server_process import ServerProcess


def _call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # a new connection each time
    connection.request(method, path, json.dumps(body) if body else None,
                       {"Content-Type": "application/json", "X-API-Key": "k"})
    response = connection.getresponse()
    status, payload = response.status, json.loads(response.read())
    connection.close()
    return status, payload


@pytest.mark.slow
def test_writes_are_seen_by_every_worker(served_index, tmp_path):
    with ServerProcess(served_index, api_key="k", workers=2, log_path=tmp_path / "server.log") as server:
        pids = set()
        for n in range(20):
            status, _ = _call(server.port, "POST", "/documents", {"id": f"w{n}", "text": f"worker note {n}"})
            assert status == 200
            for _ in range(3):
                status, payload = _call(server.port, "GET", f"/documents/w{n}")
                assert status == 200 and payload["text"] == f"worker note {n}"
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            connection.request("GET", "/metrics")
            pids.add(connection.getresponse().getheader("X-Worker-Pid"))
            connection.close()
        assert len(pids) == 2, "both workers answered"


def _metrics(port: int) -> tuple[str, str]:
    """The `/metrics` text and the pid of the worker that answered (a new connection each time)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    text, pid = response.read().decode(), response.getheader("X-Worker-Pid")
    connection.close()
    return text, pid


def _sample(text: str, name: str, **labels: str) -> float:
    """The one sample of ``name`` with ``labels`` in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())]
    assert len(values) == 1, (name, labels, values)
    return values[0]


@pytest.mark.slow
def test_metrics_count_every_workers_requests(served_index, tmp_path):
    """prometheus-client's multiprocess mode: whichever worker answers `/metrics`, it counts the
    requests every worker answered, a killed worker's included; the files go when the server stops."""
    import os
    import signal

    from lsr.eval.load_test import worker_pids

    health = {"name": "lsr_requests_total", "method": "GET", "route": "/health", "status": "200"}
    with ServerProcess(served_index, api_key="k", workers=2, log_path=tmp_path / "server.log") as server:
        before = _sample(_metrics(server.port)[0], **health)  # the start-up probe's
        for _ in range(40):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            connection.request("GET", "/health")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            connection.close()
        seen = {}
        for _ in range(100):  # until both workers have answered
            text, pid = _metrics(server.port)
            seen[pid] = _sample(text, **health)
            assert _sample(text, "lsr_documents") > 0
            if len(seen) == 2:
                break
        assert list(seen.values()) == [before + 40] * 2, seen

        victim = worker_pids(server.process.pid)[0]
        directory = {line.split("=", 1)[1] for line in open(f"/proc/{victim}/environ").read().split("\0")
                     if line.startswith("PROMETHEUS_MULTIPROC_DIR=")}.pop()
        os.kill(victim, signal.SIGKILL)
        counts = {_sample(_metrics(server.port)[0], **health) for _ in range(10)}
        assert counts == {before + 40}, "the killed worker's requests still count"
    assert not os.path.exists(directory), "the metrics files are removed when the server stops"


@pytest.mark.slow
def test_one_worker_killed_while_the_other_writes(served_index, tmp_path):
    """Two workers share the write-ahead log; one takes the write role and flushes. SIGKILL one
    worker: requests on new connections keep succeeding, nothing acknowledged is lost."""
    import os
    import signal
    import time

    from lsr.eval.load_test import worker_pids

    env = {"LSR_FLUSH_SECONDS": "0.3", "LSR_FLUSH_CHECK_SECONDS": "0.1"}
    with ServerProcess(served_index, api_key="k", workers=2, log_path=tmp_path / "server.log", env=env) as server:
        for n in range(10):
            assert _call(server.port, "POST", "/documents", {"id": f"before{n}", "text": f"note {n}"})[0] == 200
        victim = worker_pids(server.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        failed = 0
        for n in range(30):
            status, _ = _call(server.port, "POST", "/documents", {"id": f"after{n}", "text": f"note {n}"})
            failed += status != 200
        assert failed == 0
        deadline = time.monotonic() + 60
        while len(worker_pids(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # uvicorn starts a new worker
        for doc_id in [f"before{n}" for n in range(10)] + [f"after{n}" for n in range(30)]:
            for _ in range(2):  # whichever worker answers
                assert _call(server.port, "GET", f"/documents/{doc_id}")[0] == 200
        stats = _call(server.port, "GET", "/stats")[1]
        assert stats["documents"] == 240
    assert "Traceback" not in (tmp_path / "server.log").read_text()
