"""Load test of `lsr serve` on loopback, with a forced restart in the middle of the run.

    python eval/load_test.py INDEX_DIR [--clients 16] [--duration 60] [--write-fraction 0.05]
        [--restart-at 30] [--workers 2 --kill-worker-at 20] [--out eval/results/service_load]

The index is copied first (the run writes to it). Each client thread holds one keep-alive
connection and loops until the deadline: a search (sparse 70%, hybrid 20%, dense 10%, k=10)
or, with probability ``--write-fraction``, a write on its own documents (add a new one,
replace one, or delete one). At ``--restart-at`` seconds the server's process group gets
SIGKILL (a crash: no shutdown code runs) and is started again; requests that meet the dead
server count as connection errors, and a write without a response is "unknown" (it may or
may not have been applied).

With ``--kill-worker-at`` (and two or more workers), one worker process alone gets SIGKILL at
that moment (uvicorn starts a new one) while the others go on: requests on connections opened
after the kill must all succeed (a client's keep-alive connection to the dead worker fails
once, and is counted apart as a stale connection).

Afterwards every document a client wrote is checked, first on the running server, then again
after a second SIGKILL and restart: an acknowledged write is lost when the document's state
(absent, or present with the text last written) is not one its write history allows.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsr.eval.report import machine_description
from lsr.eval.server_process import ServerProcess, log_tracebacks

API_KEY = "load-test-key"
MODES = (("sparse", 0.7), ("hybrid", 0.2), ("dense", 0.1))
ABSENT = None


@dataclass
class ClientLog:
    """What one client did: request outcomes and the write history of its documents."""

    outcomes: list = field(default_factory=list)  # (kind, status or "error", ms, connection opened at)
    history: dict = field(default_factory=dict)  # doc id -> [(op, text, acknowledged)]


class Client:
    def __init__(self, number: int, url: str, queries: list[str], texts: list[str], write_fraction: float,
                 deadline: float, seed: int) -> None:
        self.number, self.queries, self.texts = number, queries, texts
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.write_fraction, self.deadline = write_fraction, deadline
        self.random = random.Random(seed)
        self.log = ClientLog()
        self.live: list[str] = []  # its documents it believes exist
        self.created = 0
        self.connection = None
        self.connection_opened = 0.0

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int | str, dict | None]:
        headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.connection_opened = time.perf_counter()
            self.connection.request(method, path, json.dumps(body) if body is not None else None, headers)
            response = self.connection.getresponse()
            payload = response.read()
            try:
                return response.status, json.loads(payload) if payload else None
            except ValueError:  # not JSON (a proxy's or a dying server's page): the status still counts
                return response.status, {"not_json": payload[:200].decode("utf-8", "replace")}
        except (OSError, http.client.HTTPException):
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            return "error", None

    def timed(self, kind: str, method: str, path: str, body: dict | None = None):
        started = time.perf_counter()
        opened = self.connection_opened if self.connection is not None else started
        status, payload = self.request(method, path, body)
        self.log.outcomes.append((kind, status, (time.perf_counter() - started) * 1000, opened))
        if status == "error":
            time.sleep(0.1)  # the server is down (restart): back off a little
        return status, payload

    def search(self) -> None:
        draw, mode = self.random.random(), "sparse"
        for name, share in MODES:
            if draw < share:
                mode = name
                break
            draw -= share
        self.timed(f"search:{mode}", "POST", "/search", {"query": self.random.choice(self.queries), "k": 10, "mode": mode})

    def write(self) -> None:
        draw = self.random.random()
        if self.live and draw < 0.4:
            doc_id = self.random.choice(self.live)
            status, _ = self.timed("delete", "DELETE", f"/documents/{doc_id}")
            self._record(doc_id, "delete", ABSENT, status)
            return
        if self.live and draw < 0.55:
            doc_id = self.random.choice(self.live)  # replace
        else:
            doc_id = f"load-{self.number}-{self.created}"
            self.created += 1
        text = f"{self.random.choice(self.texts)} [written by client {self.number}, {time.time():.6f}]"
        status, _ = self.timed("add", "POST", "/documents", {"id": doc_id, "title": f"load {doc_id}", "text": text})
        self._record(doc_id, "add", text, status)

    def _record(self, doc_id: str, op: str, text, status) -> None:
        self.log.history.setdefault(doc_id, []).append((op, text, status == 200))
        if status == 200 and op == "add" and doc_id not in self.live:
            self.live.append(doc_id)
        elif status == 200 and op == "delete":
            self.live.remove(doc_id)

    def run(self) -> None:
        while time.perf_counter() < self.deadline:
            self.write() if self.random.random() < self.write_fraction else self.search()


def allowed_states(history: list) -> set:
    """The states a document may be in after its write history (unknown writes may or may not apply)."""
    states = {ABSENT}
    for op, text, acknowledged in history:
        after = text if op == "add" else ABSENT
        states = {after} if acknowledged else states | {after}
    return states


def verify(url: str, logs: list[ClientLog]) -> dict:
    checker = Client(-1, url, [], [], 0.0, 0.0, 0)
    checked = lost = 0
    examples = []
    for log in logs:
        for doc_id, history in log.history.items():
            status, payload = checker.request("GET", f"/documents/{doc_id}")
            if status not in (200, 404):
                raise RuntimeError(f"GET /documents/{doc_id} answered {status}")
            state = payload["text"] if status == 200 else ABSENT
            checked += 1
            if state not in allowed_states(history):
                lost += 1
                examples.append({"id": doc_id, "state": state, "history": history[-3:]})
    return {"documents_checked": checked, "lost_acknowledged_writes": lost, "examples": examples[:5]}


def summarise(logs: list[ClientLog], seconds: float) -> dict:
    outcomes = [o[:3] for log in logs for o in log.outcomes]
    by_kind: dict = {}
    for kind, status, ms in outcomes:
        entry = by_kind.setdefault(kind, {"ok": [], "4xx": 0, "5xx": 0, "errors": 0})
        if status == "error":
            entry["errors"] += 1
        elif status >= 500:
            entry["5xx"] += 1
        elif status >= 400:
            entry["4xx"] += 1
        else:
            entry["ok"].append(ms)
    table = {}
    for kind, entry in sorted(by_kind.items()):
        ok = np.array(entry["ok"])
        table[kind] = {"ok": len(ok), "4xx": entry["4xx"], "5xx": entry["5xx"], "connection_errors": entry["errors"],
                       "p50_ms": float(np.percentile(ok, 50)) if len(ok) else None,
                       "p99_ms": float(np.percentile(ok, 99)) if len(ok) else None}
    ok_all = np.array([ms for _, status, ms in outcomes if status != "error" and status < 400])
    return {"requests": len(outcomes), "answered": int(sum(1 for _, s, _ in outcomes if s != "error")),
            "qps": len(ok_all) / seconds, "p50_ms": float(np.percentile(ok_all, 50)),
            "p99_ms": float(np.percentile(ok_all, 99)),
            "5xx": sum(t["5xx"] for t in table.values()), "4xx": sum(t["4xx"] for t in table.values()),
            "connection_errors": sum(t["connection_errors"] for t in table.values()), "by_kind": table}


def after_worker_kill(logs: list[ClientLog], killed_at: float) -> dict:
    """Requests on connections opened after the kill (must all succeed) and stale-connection failures."""
    fresh = [o for log in logs for o in log.outcomes if o[3] > killed_at]
    stale = [o for log in logs for o in log.outcomes if o[3] <= killed_at and o[1] == "error"]
    failed = [o for o in fresh if o[1] == "error" or o[1] >= 500]
    writes = [o for o in fresh if o[0] in ("add", "delete")]
    return {"requests_after": len(fresh), "writes_after": len(writes), "failed_requests_after": len(failed),
            "stale_connection_failures": len(stale)}


def worker_pids(master: int) -> list[int]:
    """The uvicorn worker processes: children of the master started by multiprocessing's spawn
    (not its resource tracker)."""
    workers = []
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in command and b"resource_tracker" not in command:
            workers.append(int(pid))
    return workers


def run(index_dir: Path, clients: int, duration: float, write_fraction: float, restart_at: float | None,
        workers: int, dataset: str, work_dir: Path, kill_worker_at: float | None = None) -> dict:
    from lsr.data.datasets import resolve_dataset

    data = resolve_dataset(dataset)
    queries = list(data.queries().values())
    texts = [doc.text for _, doc in zip(range(500), data.iter_documents())]
    copy = work_dir / "index"
    shutil.copytree(index_dir, copy)
    server = ServerProcess(copy, api_key=API_KEY, workers=workers, log_path=work_dir / "server.log")
    startup = server.start()
    started = time.perf_counter()
    deadline = started + duration
    pool = [Client(i, server.url, queries, texts, write_fraction, deadline, seed=i) for i in range(clients)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in pool]
    for thread in threads:
        thread.start()
    restart = worker_kill = None
    if kill_worker_at is not None:
        time.sleep(max(0.0, started + kill_worker_at - time.perf_counter()))
        victim = worker_pids(server.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        worker_kill = {"at_s": time.perf_counter() - started, "pid": victim, "killed_at": time.perf_counter()}
    if restart_at is not None:
        time.sleep(max(0.0, started + restart_at - time.perf_counter()))
        killed = time.perf_counter()
        server.kill()
        back = server.start()
        restart = {"at_s": killed - started, "downtime_s": time.perf_counter() - killed, "startup_s": back}
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    logs = [c.log for c in pool]
    if worker_kill is not None:
        worker_kill.update(after_worker_kill(logs, worker_kill.pop("killed_at")))
    after_run = verify(server.url, logs)
    server.kill()
    server.start()
    after_second_restart = verify(server.url, logs)
    _, stats = Client(-1, server.url, [], [], 0.0, 0.0, 0).request("GET", "/stats")
    server.stop()
    return {"clients": clients, "duration_s": seconds, "write_fraction": write_fraction, "workers": workers,
            "initial_startup_s": startup, "restart": restart, "worker_kill": worker_kill, **summarise(logs, seconds),
            "writes_verified_after_run": after_run, "writes_verified_after_second_restart": after_second_restart,
            "stats": stats}


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    r = result
    restart = r["restart"]
    lines = [f"# Load test: {r['clients']} clients for {r['duration_s']:.0f} s on loopback, "
             f"{r['write_fraction']:.0%} writes, {r['workers']} worker(s)", "",
             f"- answered requests: {r['answered']} of {r['requests']}; **{r['qps']:.1f} QPS**, "
             f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms (successful requests)",
             f"- **5xx: {r['5xx']}**; 4xx: {r['4xx']}; connection errors (while the server was down): {r['connection_errors']}; "
             f"**tracebacks in the server log: {len(r['server_tracebacks'])}**"]
    if restart:
        lines.append(f"- forced restart (SIGKILL of the server's process group) at {restart['at_s']:.1f} s; "
                     f"back after {restart['downtime_s']:.1f} s")
    kill = r.get("worker_kill")
    if kill:
        lines.append(f"- one worker of {r['workers']} killed (SIGKILL of pid {kill['pid']}) at {kill['at_s']:.1f} s: "
                     f"**failed requests after it: {kill['failed_requests_after']}** of {kill['requests_after']} "
                     f"({kill['writes_after']} writes) on connections opened after the kill; "
                     f"{kill['stale_connection_failures']} failed on a connection to the dead worker")
    for label, key in (("after the run", "writes_verified_after_run"),
                       ("after a second SIGKILL and restart", "writes_verified_after_second_restart")):
        v = r[key]
        lines.append(f"- **lost acknowledged writes {label}: {v['lost_acknowledged_writes']}** "
                     f"({v['documents_checked']} written documents checked)")
    lines += ["", "| request | ok | 4xx | 5xx | connection errors | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for kind, t in r["by_kind"].items():
        p50 = f"{t['p50_ms']:.1f}" if t["p50_ms"] is not None else "-"
        p99 = f"{t['p99_ms']:.1f}" if t["p99_ms"] is not None else "-"
        lines.append(f"| {kind} | {t['ok']} | {t['4xx']} | {t['5xx']} | {t['connection_errors']} | {p50} | {p99} |")
    lines += ["", f"Machine: {r['machine']['platform']}, {r['machine']['cpus']} CPUs (clients and server share them).",
              f"Command: `{r['command']}`", ""]
    lines += [f"\nServer traceback:\n\n```\n{text}\n```" for text in r["server_tracebacks"]]
    out.with_suffix(".md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--write-fraction", type=float, default=0.05)
    parser.add_argument("--restart-at", type=float, default=30.0, help="seconds into the run; negative: no restart")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--kill-worker-at", type=float, help="seconds into the run: SIGKILL one worker (needs --workers 2+)")
    parser.add_argument("--dataset", default="beir/scifact/test", help="queries and document texts to write")
    parser.add_argument("--out", type=Path, default=Path("eval/results/service_load"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = run(args.index, args.clients, args.duration, args.write_fraction,
                         args.restart_at if args.restart_at >= 0 else None, args.workers, args.dataset, Path(tmp),
                         args.kill_worker_at)
        finally:  # the server's log outlives the run: beside the results, named after them
            kept = args.out.with_suffix(".server.log")
            kept.parent.mkdir(parents=True, exist_ok=True)
            if (Path(tmp) / "server.log").exists():
                shutil.copyfile(Path(tmp) / "server.log", kept)
        result["server_tracebacks"] = log_tracebacks(kept.read_text(errors="replace"))
    result["machine"] = machine_description()
    result["command"] = "python eval/load_test.py " + shlex.join(sys.argv[1:])
    write(result, args.out)
    print(args.out.with_suffix(".md").read_text())
    failed = result["5xx"] or result["server_tracebacks"] or result["writes_verified_after_run"]["lost_acknowledged_writes"] \
        or result["writes_verified_after_second_restart"]["lost_acknowledged_writes"] \
        or (result["worker_kill"] or {}).get("failed_requests_after")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
