"""Every hostile request of `eval/hostile_requests.py` against a real `lsr serve`, recorded.

    python eval/hostile_service.py runs/serve-scifact --out eval/results/service_hostile

The index is copied first (some requests write). Each case is sent byte for byte over a raw
socket; the answer is checked (`eval.hostile_requests.problems`: above all, never a 5xx);
afterwards the server's log is searched for tracebacks and for the API key.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
from pathlib import Path

from lsr.eval.hostile_requests import hostile_requests, problems, send
from lsr.eval.report import publish
from lsr.eval.server_process import ServerProcess

API_KEY = "hostile-test-key-7f3a"


def run(index: Path, work: Path, workers: int) -> dict:
    copy = work / "index"
    shutil.copytree(index, copy)
    log = work / "server.log"
    statuses: collections.Counter = collections.Counter()
    failures = []
    cases = hostile_requests()
    with ServerProcess(copy, api_key=API_KEY, workers=workers, log_path=log) as server:
        for case in cases:
            answer = send("127.0.0.1", server.port, case, api_key=API_KEY)
            statuses[answer.status] += 1
            if found := problems(case, answer):
                failures.append({"case": case.name, "problems": found})
    text = log.read_text(errors="replace")
    return {"cases": len(cases), "statuses": dict(sorted(statuses.items(), key=lambda kv: str(kv[0]))),
            "server_errors": sum(n for status, n in statuses.items() if isinstance(status, int) and status >= 500),
            "failures": failures, "tracebacks_in_log": text.count("Traceback"), "api_key_in_log": API_KEY in text,
            "workers": workers}


def markdown(report: dict) -> str:
    statuses = ", ".join(f"{status}: {count}" for status, count in report["statuses"].items())
    lines = ["# Hostile requests against a real server", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['machine']['platform']}, "
             f"{report['machine']['cpus']} CPUs", "",
             f"- {report['cases']} requests sent byte for byte (`eval/hostile_requests.py`) to `lsr serve` with "
             f"{report['workers']} worker(s)",
             f"- **5xx answers: {report['server_errors']}**; answers not as documented: {len(report['failures'])}",
             f"- statuses: {statuses}",
             f"- **tracebacks in the server log: {report['tracebacks_in_log']}**; API key in the log: "
             f"{report['api_key_in_log']}", ""]
    lines += [f"- {f['case']}: {'; '.join(f['problems'])}" for f in report["failures"][:20]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        report = run(args.index, Path(work), args.workers)
    publish(report, markdown, "hostile_service.py", argv, args.out)
    return 1 if report["server_errors"] or report["failures"] or report["tracebacks_in_log"] else 0


if __name__ == "__main__":
    sys.exit(main())
