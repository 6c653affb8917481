"""Fuzz the service with schemathesis against its own OpenAPI schema, on a real server.

    python eval/fuzz_service.py INDEX_DIR [--max-examples N] [--out eval/results/fuzz_service.md]

The index is copied first (the fuzzer adds and deletes documents). Checks: no 5xx, every
status code, content type, header and body as the schema documents them, schema-invalid
requests refused (4xx, 413 included: an over-long field can also exceed the body limit) and
schema-valid ones accepted (200, or 404 for a well-formed id of a document that does not exist).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsr.eval.report import machine_description
from lsr.eval.server_process import ServerProcess, log_tracebacks

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection,positive_data_acceptance")
# Statuses each check accepts: schema-invalid data may also meet the body limit (413); valid
# data may name a document that does not exist (404).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[checks.positive_data_acceptance]
expected-statuses = ["200", "404"]
"""
API_KEY = "fuzz-key"


def run_fuzz(index_dir: str | Path, max_examples: int = 50, workdir: str | Path | None = None) -> dict:
    """Run schemathesis once; returns ``{"returncode", "output", "seconds", "command"}``."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        copy = Path(tmp) / "index"
        shutil.copytree(index_dir, copy)
        for stale in (".serving.lock",):
            (copy / stale).unlink(missing_ok=True)
        with ServerProcess(copy, api_key=API_KEY, log_path=Path(tmp) / "server.log") as server:
            config = Path(tmp) / "schemathesis.toml"
            config.write_text(CONFIG)
            command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
                       server.url + "/openapi.json",
                       "--checks", CHECKS, "--header", f"X-API-Key: {API_KEY}", "--max-examples", str(max_examples),
                       "--seed", "1", "--no-color", "--phases", "examples,coverage,fuzzing"]
            started = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, cwd=tmp)  # its cache stays there
            seconds = time.perf_counter() - started
            server_log = (Path(tmp) / "server.log").read_text(errors="replace")
    shown = [part if not part.startswith("X-API-Key") else "X-API-Key: ***" for part in command]
    return {"returncode": result.returncode, "output": result.stdout + result.stderr, "seconds": seconds,
            "command": " ".join(shown[1:]), "server_errors": server_log.count("Traceback"),
            "tracebacks": log_tracebacks(server_log)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--max-examples", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run_fuzz(args.index, args.max_examples)
    print(result["output"])
    if args.out:
        machine = machine_description()
        args.out.write_text(
            f"# Schemathesis fuzz of the service\n\nCommand: `python eval/fuzz_service.py {args.index} "
            f"--max-examples {args.max_examples} --out {args.out}`\n\nschemathesis: `{result['command']}`\n\n"
            f"Exit code {result['returncode']} ({'passed' if result['returncode'] == 0 else 'FAILED'}) in "
            f"{result['seconds']:.0f} s; tracebacks in the server log: {result['server_errors']}.\n"
            f"Machine: {machine['platform']}, {machine['cpus']} CPUs.\n\n```\n{result['output'].strip()}\n```\n"
            + "".join(f"\nServer traceback:\n\n```\n{text}\n```\n" for text in result["tracebacks"]))
    for text in result["tracebacks"]:
        print(text, file=sys.stderr)
    return 0 if result["returncode"] == 0 and not result["server_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
