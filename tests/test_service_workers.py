"""Two uvicorn workers share one update log: a write through one is read through the other (slow)."""

from __future__ import annotations

import http.client
import json

import pytest

from eval.server_process import ServerProcess


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
