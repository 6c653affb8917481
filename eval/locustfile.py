"""The load of `eval/load_test.py`, as a locust user: searches and writes against `lsr serve`.

Run by `eval/load_test.py` (headless, on loopback); by hand:

    locust -f eval/locustfile.py --headless --users 16 --spawn-rate 16 --run-time 60s \
        --host http://127.0.0.1:8000 --lsr-inputs INPUTS.json --lsr-log LOG

Each user holds one keep-alive connection (locust's FastHttpUser) and loops with no wait: a
search (sparse 70%, hybrid 20%, dense 10%, k=10) or, with probability ``write_fraction``, a
write on its own documents (add a new one, replace one, or delete one). Locust counts requests
and latencies as usual; beside that every user logs its outcomes and the write history of its
documents, which ``--lsr-log`` receives as JSON with locust's totals when locust quits (``LOG.json``; ``LOG.started``
holds the monotonic clock at the start, which `load_test` times its kills from). A write is
logged before it is sent, so one cut off by the end of the run still counts as possibly applied.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

from locust import events, task
from locust.contrib.fasthttp import FastHttpUser

MODES = (("sparse", 0.7), ("hybrid", 0.2), ("dense", 0.1))
_numbers = itertools.count()
_users: list["SearchAndWrite"] = []


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--lsr-inputs", required=True,
                        help="JSON: {queries: [...], texts: [...], write_fraction: float, api_key: str}")
    parser.add_argument("--lsr-log", required=True, help="prefix of the outcome log and start marker")


@events.test_start.add_listener
def _started(environment, **_) -> None:
    Path(environment.parsed_options.lsr_log + ".started").write_text(repr(time.monotonic()))


@events.quitting.add_listener
def _write_log(environment, **_) -> None:
    total = environment.stats.total  # locust's own count, final only now (its CSVs may lag)
    summary = {"requests": total.num_requests, "failures": total.num_failures, "requests_per_s": total.total_rps,
               "p50_ms": total.get_response_time_percentile(0.5), "p99_ms": total.get_response_time_percentile(0.99)}
    clients = [{"number": user.number, "outcomes": user.outcomes, "history": user.history} for user in _users]
    Path(environment.parsed_options.lsr_log + ".json").write_text(json.dumps({"locust": summary, "clients": clients}))


class SearchAndWrite(FastHttpUser):
    """One client: its request outcomes ``[kind, status or "error", ms, started]`` (``started`` on
    the monotonic clock) and the write history of its documents ``{id: [[op, text, acknowledged]]}``."""

    concurrency = 1  # one connection per user, as a client with keep-alive holds
    max_retries = 0  # a request that meets a dead server fails once, counted (no silent retry)

    def on_start(self) -> None:
        inputs = json.loads(Path(self.environment.parsed_options.lsr_inputs).read_text())
        self.queries, self.texts, self.write_fraction = inputs["queries"], inputs["texts"], inputs["write_fraction"]
        self.api_key = inputs["api_key"]
        self.number = next(_numbers)
        self.random = random.Random(self.number)
        self.outcomes: list = []
        self.history: dict = {}
        self.live: list[str] = []  # its documents it believes exist
        self.created = 0
        _users.append(self)

    def _timed(self, kind: str, method: str, path: str, body: dict | None = None) -> int | str:
        started = time.monotonic()
        response = self.client.request(method, path, json=body, name=kind,
                                       headers={"X-API-Key": self.api_key})
        status = response.status_code
        if not status or (status < 400 and getattr(response, "error", None)):  # no answer, or one cut off in its body
            status = "error"
        self.outcomes.append([kind, status, (time.monotonic() - started) * 1000, started])
        if status == "error":
            time.sleep(0.1)  # the server is down (a restart): back off a little (gevent's sleep)
        return status

    @task
    def one_request(self) -> None:
        self._write() if self.random.random() < self.write_fraction else self._search()

    def _search(self) -> None:
        draw, mode = self.random.random(), "sparse"
        for name, share in MODES:
            if draw < share:
                mode = name
                break
            draw -= share
        self._timed(f"search:{mode}", "POST", "/search",
                    {"query": self.random.choice(self.queries), "k": 10, "mode": mode})

    def _write(self) -> None:
        draw = self.random.random()
        if self.live and draw < 0.4:
            doc_id = self.random.choice(self.live)
            entry = self._intend(doc_id, "delete", None)
            entry[2] = self._timed("delete", "DELETE", f"/documents/{doc_id}") == 200
            if entry[2]:
                self.live.remove(doc_id)
            return
        if self.live and draw < 0.55:
            doc_id = self.random.choice(self.live)  # replace
        else:
            doc_id = f"load-{self.number}-{self.created}"
            self.created += 1
        text = f"{self.random.choice(self.texts)} [written by client {self.number}, {time.time():.6f}]"
        entry = self._intend(doc_id, "add", text)
        entry[2] = self._timed("add", "POST", "/documents", {"id": doc_id, "title": f"load {doc_id}", "text": text}) == 200
        if entry[2] and doc_id not in self.live:
            self.live.append(doc_id)

    def _intend(self, doc_id: str, op: str, text: str | None) -> list:
        """Log a write before it is sent, unacknowledged until its 200 arrives."""
        entry = [op, text, False]
        self.history.setdefault(doc_id, []).append(entry)
        return entry
