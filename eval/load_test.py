"""Load test of `lsr serve` on loopback, with a forced restart in the middle of the run.

    python eval/load_test.py INDEX_DIR [--clients 16] [--duration 60] [--write-fraction 0.05]
        [--restart-at 30] [--workers 2 --kill-worker-at 20] [--out eval/results/service_load]

The index is copied first (the run writes to it). The load is locust's, headless, in its own
process (`eval/locustfile.py`): ``--clients`` users, each with one keep-alive connection,
looping until the deadline: a search (sparse 70%, hybrid 20%, dense 10%, k=10) or, with
probability ``--write-fraction``, a write on its own documents (add a new one, replace one, or
delete one). At ``--restart-at`` seconds the server's process group gets SIGKILL (a crash: no
shutdown code runs) and is started again; requests that meet the dead server count as
connection errors, and a write without a response is "unknown" (it may or may not have been
applied).

With ``--kill-worker-at`` (and two or more workers), one worker process alone gets SIGKILL at
that moment (uvicorn starts a new one) while the others go on: after it, each client may fail
once, on its keep-alive connection to the dead worker (counted apart as a stale connection);
every other request must succeed.

Afterwards every document a client wrote is checked, first on the running server, then again
after a second SIGKILL and restart: an acknowledged write is lost when the document's state
(absent, or present with the text last written) is not one its write history allows.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lsr.eval.report import machine_description
from lsr.eval.server_process import ServerProcess, log_tracebacks

API_KEY = "load-test-key"  # handed to the locustfile in its inputs
ABSENT = None
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def request(url: str, method: str, path: str) -> tuple[int, dict | None]:
    """One request on a new connection (the checks after the run, not the load)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, headers={"X-API-Key": API_KEY})
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        connection.close()


def allowed_states(history: list) -> set:
    """The states a document may be in after its write history (unknown writes may or may not apply)."""
    states = {ABSENT}
    for op, text, acknowledged in history:
        after = text if op == "add" else ABSENT
        states = {after} if acknowledged else states | {after}
    return states


def verify(url: str, logs: list[dict]) -> dict:
    checked = lost = 0
    examples = []
    for log in logs:
        for doc_id, history in log["history"].items():
            status, payload = request(url, "GET", f"/documents/{doc_id}")
            if status not in (200, 404):
                raise RuntimeError(f"GET /documents/{doc_id} answered {status}")
            state = payload["text"] if status == 200 else ABSENT
            checked += 1
            if state not in allowed_states(history):
                lost += 1
                examples.append({"id": doc_id, "state": state, "history": history[-3:]})
    return {"documents_checked": checked, "lost_acknowledged_writes": lost, "examples": examples[:5]}


def summarise(logs: list[dict], seconds: float) -> dict:
    outcomes = [o[:3] for log in logs for o in log["outcomes"]]
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


def after_worker_kill(logs: list[dict], killed_at: float) -> dict:
    """Requests sent after the kill: each client's first connection error is its keep-alive
    connection to the dead worker (stale); any other failure counts."""
    after = stale = failed = writes = 0
    for log in logs:
        first_error = True
        for kind, status, _, started in log["outcomes"]:
            if started <= killed_at:
                continue
            after += 1
            writes += kind in ("add", "delete")
            if status == "error" and first_error:
                stale, first_error = stale + 1, False
            elif status == "error" or status >= 500:
                failed += 1
    return {"requests_after": after - stale, "writes_after": writes, "failed_requests_after": failed,
            "stale_connection_failures": stale}


def worker_pids(master: int) -> list[int]:
    """The uvicorn worker processes: children of the master started by multiprocessing's spawn
    (not its resource tracker)."""
    workers = []
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in command and b"resource_tracker" not in command:
            workers.append(int(pid))
    return workers


def start_locust(url: str, clients: int, duration: float, inputs: Path, log: Path) -> subprocess.Popen:
    """Locust, headless, in its own process (it patches the standard library for gevent)."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--users", str(clients),
               "--spawn-rate", str(clients), "--run-time", f"{max(1, round(duration))}s",  # whole seconds only
               "--stop-timeout", "30", "--host", url, "--only-summary", "--exit-code-on-error", "0",
               "--lsr-inputs", str(inputs), "--lsr-log", str(log)]
    return subprocess.Popen(command, stdout=open(f"{log}.locust.log", "w"), stderr=subprocess.STDOUT)


def wait_started(locust: subprocess.Popen, log: Path, timeout: float = 120) -> float:
    """The monotonic time at which locust's users started (its start marker)."""
    marker, deadline = Path(f"{log}.started"), time.monotonic() + timeout
    while not marker.exists() or not marker.read_text():
        if locust.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"locust did not start; see {log}.locust.log:\n" + Path(f"{log}.locust.log").read_text())
        time.sleep(0.05)
    return float(marker.read_text())


def run(index_dir: Path, clients: int, duration: float, write_fraction: float, restart_at: float | None,
        workers: int, dataset: str, work_dir: Path, kill_worker_at: float | None = None) -> dict:
    from lsr.data.datasets import resolve_dataset

    data = resolve_dataset(dataset)
    inputs = work_dir / "inputs.json"
    inputs.write_text(json.dumps({"queries": list(data.queries().values()), "write_fraction": write_fraction,
                                  "api_key": API_KEY,
                                  "texts": [doc.text for _, doc in zip(range(500), data.iter_documents())]}))
    copy = work_dir / "index"
    shutil.copytree(index_dir, copy)
    server = ServerProcess(copy, api_key=API_KEY, workers=workers, log_path=work_dir / "server.log")
    startup = server.start()
    log = work_dir / "load"
    locust = start_locust(server.url, clients, duration, inputs, log)
    try:
        started = wait_started(locust, log)
        restart = worker_kill = None
        if kill_worker_at is not None:
            time.sleep(max(0.0, started + kill_worker_at - time.monotonic()))
            victim = worker_pids(server.process.pid)[0]
            os.kill(victim, signal.SIGKILL)
            worker_kill = {"at_s": time.monotonic() - started, "pid": victim, "killed_at": time.monotonic()}
        if restart_at is not None:
            time.sleep(max(0.0, started + restart_at - time.monotonic()))
            killed = time.monotonic()
            server.kill()
            back = server.start()
            restart = {"at_s": killed - started, "downtime_s": time.monotonic() - killed, "startup_s": back}
        locust.wait(timeout=duration + 120)
    finally:
        if locust.poll() is None:
            locust.kill()
    seconds = time.monotonic() - started
    if locust.returncode != 0:
        raise RuntimeError(f"locust exited with {locust.returncode}; see {log}.locust.log")
    written = json.loads(Path(f"{log}.json").read_text())
    logs = written["clients"]
    if worker_kill is not None:
        worker_kill.update(after_worker_kill(logs, worker_kill.pop("killed_at")))
    after_run = verify(server.url, logs)
    server.kill()
    server.start()
    after_second_restart = verify(server.url, logs)
    _, stats = request(server.url, "GET", "/stats")
    server.stop()
    return {"clients": clients, "duration_s": seconds, "write_fraction": write_fraction, "workers": workers,
            "load_generator": f"locust {_locust_version()} (headless, FastHttpUser)", "locust": written["locust"],
            "initial_startup_s": startup, "restart": restart, "worker_kill": worker_kill, **summarise(logs, seconds),
            "writes_verified_after_run": after_run, "writes_verified_after_second_restart": after_second_restart,
            "stats": stats}


def _locust_version() -> str:
    from importlib.metadata import version

    return version("locust")


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    r = result
    restart = r["restart"]
    lines = [f"# Load test: {r['clients']} clients for {r['duration_s']:.0f} s on loopback, "
             f"{r['write_fraction']:.0%} writes, {r['workers']} worker(s)", "",
             f"- load: {r['load_generator']}, one keep-alive connection per client, no wait between requests",
             f"- answered requests: {r['answered']} of {r['requests']}; **{r['qps']:.1f} QPS**, "
             f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms (successful requests)",
             f"- locust's own count: {r['locust']['requests']} requests, {r['locust']['failures']} failures "
             f"(refused or reset while the server was down, and any 4xx/5xx), p50 {r['locust']['p50_ms']:.0f} ms, "
             f"p99 {r['locust']['p99_ms']:.0f} ms (all requests, failures included)",
             f"- **5xx: {r['5xx']}**; 4xx: {r['4xx']}; connection errors (while the server was down): {r['connection_errors']}; "
             f"**tracebacks in the server log: {len(r['server_tracebacks'])}**"]
    if restart:
        lines.append(f"- forced restart (SIGKILL of the server's process group) at {restart['at_s']:.1f} s; "
                     f"back after {restart['downtime_s']:.1f} s")
    kill = r.get("worker_kill")
    if kill:
        lines.append(f"- one worker of {r['workers']} killed (SIGKILL of pid {kill['pid']}) at {kill['at_s']:.1f} s: "
                     f"**failed requests after it: {kill['failed_requests_after']}** of {kill['requests_after']} "
                     f"({kill['writes_after']} writes); {kill['stale_connection_failures']} failed once on a client's "
                     "keep-alive connection to the dead worker")
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
        finally:  # the server's and locust's logs outlive the run: beside the results, named after them
            kept = args.out.with_suffix(".server.log")
            kept.parent.mkdir(parents=True, exist_ok=True)
            for log, beside in (("server.log", kept), ("load.locust.log", args.out.with_suffix(".locust.log"))):
                if (Path(tmp) / log).exists():
                    shutil.copyfile(Path(tmp) / log, beside)
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
