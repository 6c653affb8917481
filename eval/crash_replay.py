"""Crash consistency under simulated power loss, at every fsync (``eval.crash_sim``).

For each kind of write path (appends; flushes; commits that replace every segment; merges)
and each seed, a writer runs a random scenario with its I/O recorded; then, for every cut
point (after each fsync and each acknowledgement), the directory a power cut there would
leave is rebuilt, opened, and checked: it opens, it holds every acknowledged write (the write
in flight either applied or not) and nothing else, and sparse search (exhaustive and BMP)
equals brute force over what it holds.

Usage:
    python eval/crash_replay.py --seeds 5 --steps 40 --out eval/results/crash_replay
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lsr.eval.crash_job import check_job_cut, record_job
from lsr.eval.crash_sim import IoRecorder, check_cut, initial_index, run_scenario
from lsr.eval.report import machine_description, save_result

SCENARIOS = {
    "appends": ("add", "add_many", "delete"),
    "flushes": ("add", "add_many", "delete", "flush"),
    "commits": ("add_many", "delete", "flush", "rebuild"),
    "merges": ("add_many", "delete", "flush", "merge", "force_merge"),
}


def run(seeds: int, steps: int, work: Path, job_seeds: int) -> dict:
    results = {}
    for name, kinds in SCENARIOS.items():
        row = {"kinds": list(kinds), "seeds": seeds, "steps": steps, "events": 0, "fsyncs": 0, "cuts": 0,
               "acknowledged_writes": 0, "failures": [], "seconds": 0.0}
        started = time.perf_counter()
        for seed in range(seeds):
            rng = np.random.default_rng(1000 * (list(SCENARIOS).index(name) + 1) + seed)
            directory = work / f"{name}-{seed}"
            path = directory / "ix"
            initial = initial_index(path, rng, n=80)
            recorder = IoRecorder(path, initial)
            run_scenario(path, recorder, rng, steps, kinds, initial)
            events = recorder.events[recorder.initial_events :]
            row["events"] += len(events)
            row["fsyncs"] += sum(1 for e in events if e[0] != "mark")
            row["acknowledged_writes"] += sum(len(e[2].ops) for e in events if e[:2] == ("mark", "ack"))
            for cut in recorder.cut_points:
                row["cuts"] += 1
                if problem := check_cut(recorder, cut, directory, rng):
                    row["failures"].append(f"seed {seed}, cut {cut}: {problem}")
        row["seconds"] = round(time.perf_counter() - started, 1)
        results[name] = row
        _print_row(name, row)
    results["indexing job"] = run_job_scenario(job_seeds, work)
    _print_row("indexing job", results["indexing job"])
    return results


def run_job_scenario(seeds: int, work: Path) -> dict:
    """The distributed indexing job's write path (``eval.crash_job``): blocks, publishing, merges,
    manifest; every cut is checked as it stands and after the job is run again on it."""
    row = {"kinds": ["index blocks", "publish", "merge", "manifest", "rerun"], "seeds": seeds, "steps": 0,
           "events": 0, "fsyncs": 0, "cuts": 0, "acknowledged_writes": 0, "failures": [], "seconds": 0.0}
    started = time.perf_counter()
    for seed in range(seeds):
        rng = np.random.default_rng(9000 + seed)
        directory = work / f"job-{seed}"
        directory.mkdir(parents=True)
        recorder, collection, vectors, block_docs = record_job(directory, rng)
        events = recorder.events[recorder.initial_events :]
        row["steps"] = -(-len(vectors) // block_docs)  # blocks per job
        row["events"] += len(events)
        row["fsyncs"] += sum(1 for e in events if e[0] != "mark")
        row["acknowledged_writes"] += sum(1 for e in events if e[:2] == ("mark", "blocks"))
        for cut in recorder.cut_points:
            row["cuts"] += 1
            if problem := check_job_cut(recorder, cut, collection, vectors, block_docs, directory, rng):
                row["failures"].append(f"job seed {seed}, cut {cut}: {problem}")
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _print_row(name: str, row: dict) -> None:
    print(f"{name:>12}: {row['cuts']} cut points over {row['fsyncs']} fsyncs, {row['acknowledged_writes']} "
          f"acknowledged writes, {len(row['failures'])} failures ({row['seconds']} s)", flush=True)


def markdown(report: dict) -> str:
    lines = [
        "# Crash consistency: simulated power loss at every fsync",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs",
        "",
        "Model: after a cut, a file holds its content at its last fsync (empty if never fsynced) and a "
        "directory the entries of its last fsync. Each cut is opened by a fresh writer and checked: it opens, "
        "holds every acknowledged write and nothing else (the write in flight may be there or not), and "
        "exhaustive and BMP search equal brute force over what it holds. The indexing job (`eval/crash_job.py`; "
        "steps: blocks per job, acknowledged writes: blocks reported done) is checked as the cut left it (a "
        "shard holds exactly its committed blocks, every acknowledged one among them) and after the job is run "
        "again on it (every document once, with its vector; search equals brute force).",
        "",
        "| write path | operations | seeds x steps | fsyncs | cut points checked | acknowledged writes | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in report["scenarios"].items():
        lines.append(f"| {name} | {', '.join(row['kinds'])} | {row['seeds']} x {row['steps']} | {row['fsyncs']} | "
                     f"{row['cuts']} | {row['acknowledged_writes']} | {len(row['failures'])} |")
    failures = [f for row in report["scenarios"].values() for f in row["failures"]]
    lines += ["", "Failures:" if failures else "No failures.", *[f"- {f}" for f in failures[:20]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--job-seeds", type=int, default=2, help="indexing jobs (each cut runs the job again)")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        scenarios = run(args.seeds, args.steps, Path(work), args.job_seeds)
    report = {"scenarios": scenarios, "machine": machine_description(),
              "command": "python eval/crash_replay.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
    if args.out:
        save_result(args.out, report, markdown(report))
    return 1 if any(row["failures"] for row in scenarios.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
