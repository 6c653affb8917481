"""Corruption: flipped bytes and truncations in every file of a segment and of a commit.

    python eval/corruption_test.py --flips 20 --out eval/results/corruption

An index of three segments (one with deletions, all with a dense part and stored texts) is
built; for every file a commit names (the commit file, each segment's ``meta.json``, arrays
and dense files, the delete files), ``--flips`` random single-byte flips and one truncation
are tried, each on a fresh copy. For each damaged copy, in a child process (so that a crash
is seen as one):

* ``lsr index verify`` must report it;
* opening the index (checksums on, the default) and searching it must raise a clear error,
  never crash the process and never return results;
* opening it with checksums off (structure checks only) and searching must never crash the
  process; whether it raises or answers is counted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.eval.report import publish
from lsr.index.build import IndexBuild
from lsr.index.commit import read_newest_commit
from lsr.index.live import LiveIndex

VOCAB = 300

CHILD = r"""
import json, sys, traceback
import numpy as np
from lsr.index.check import verify_index
from lsr.index.live import LiveIndex
from lsr.index.format import IndexFormatError

def attempt(path, verify):
    try:
        with LiveIndex(path, verify=verify, writer="never") as live:
            hits = 0
            for scorer in ("exhaustive", "bmp"):
                ids, _ = live.search_sparse(np.arange(0, 300, 7), np.ones(43, np.float32), 20, scorer=scorer)
                hits += len(ids)
            ids, _ = live.search_dense(np.ones(8, np.float32), 5)
            for doc_id in ids[:3]:
                live.document(doc_id)
            return {"outcome": "answered", "hits": hits}
    except Exception as error:
        clear = isinstance(error, (IndexFormatError, ValueError, OSError)) and str(error)
        return {"outcome": "error" if clear else "unexpected error", "error": f"{type(error).__name__}: {error}"[:300]}

for line in sys.stdin:
    trial = json.loads(line)
    print(json.dumps({"start": trial["id"]}), flush=True)
    problems, _ = verify_index(trial["path"])
    result = {"id": trial["id"], "verify_detects": bool(problems),
              "checked": attempt(trial["path"], True), "structure_only": attempt(trial["path"], False)}
    print(json.dumps(result), flush=True)
"""


def build(path: Path, rng) -> None:
    build_job = IndexBuild(path, VOCAB, segment_docs=200, merge=False, store_texts=True,
                           dense={"model": "test", "dim": 8}, reorder="bp", block_size=8)
    for start in range(0, 600, 100):
        rows = sp.random(100, VOCAB, density=0.04, random_state=rng, format="csr", dtype=np.float32)
        rows.data = np.abs(rows.data) + 0.05
        ids = [f"d{start + i}" for i in range(100)]
        build_job.add(ids, _batch(rows), [f"title {i}" for i in ids], texts=[f"text {i}" for i in ids],
                      dense=rng.normal(size=(100, 8)).astype(np.float32))
    build_job.finish()
    with LiveIndex(path) as live:
        for i in range(0, 200, 9):
            live.delete(f"d{i}")
        live.flush()  # the deletions go into a delete file


def _batch(rows):
    from lsr.index.sparse_batch import SparseBatch

    return SparseBatch.from_scipy(rows)


def files_of(path: Path) -> list[Path]:
    commit = read_newest_commit(path)
    files = [next(path.glob(f"commit-{commit.generation:010d}.json"))]
    for record in commit.segments:
        files += sorted(p for p in (path / "segments" / record.name).rglob("*") if p.is_file())
        if record.deletes:
            files.append(path / record.deletes["file"])
    return files


def run(flips: int, work: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    original = work / "original"
    build(original, rng)
    trials = []
    for file in files_of(original):
        relative = file.relative_to(original)
        size = file.stat().st_size
        for _ in range(flips):
            offset = int(rng.integers(size))
            trials.append({"file": str(relative), "kind": "flip", "offset": offset, "xor": int(rng.integers(1, 256))})
        trials.append({"file": str(relative), "kind": "truncate", "offset": int(rng.integers(size))})
    results = []
    child = _start_child()
    for number, trial in enumerate(trials):
        copy = work / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(original, copy)
        _damage(copy / trial["file"], trial)
        child.stdin.write(json.dumps({"id": number, "path": str(copy)}) + "\n")
        child.stdin.flush()
        started = json.loads(child.stdout.readline() or "{}")
        line = child.stdout.readline()
        if not line or started.get("start") != number:  # the child died: a crash
            code = child.wait()
            results.append({**trial, "crash": True, "exit": code})
            child = _start_child()
            continue
        results.append({**trial, **json.loads(line), "crash": False})
    child.stdin.close()
    child.wait()
    return summarise(results)


def _start_child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _damage(path: Path, trial: dict) -> None:
    data = bytearray(path.read_bytes())
    if trial["kind"] == "flip":
        data[trial["offset"]] ^= trial["xor"]
    else:
        del data[trial["offset"] :]
    path.write_bytes(bytes(data))


def summarise(results: list[dict]) -> dict:
    by_file: dict = {}
    for r in results:
        kind = _kind(r["file"])
        row = by_file.setdefault(kind, {"trials": 0, "verify_detects": 0, "crashes": 0, "checked_silent": 0,
                                        "checked_unclear": 0, "structure_answered": 0, "structure_errors": 0})
        row["trials"] += 1
        if r["crash"]:
            row["crashes"] += 1
            continue
        row["verify_detects"] += r["verify_detects"]
        row["checked_silent"] += r["checked"]["outcome"] == "answered"
        row["checked_unclear"] += r["checked"]["outcome"] == "unexpected error"
        row["structure_answered"] += r["structure_only"]["outcome"] == "answered"
        row["structure_errors"] += r["structure_only"]["outcome"] != "answered"
    totals = {key: sum(row[key] for row in by_file.values()) for key in next(iter(by_file.values()))}
    failures = [r for r in results if r["crash"] or not r["verify_detects"] or r["checked"]["outcome"] != "error"]
    return {"by_file": by_file, "totals": totals, "failures": failures[:20]}


def _kind(relative: str) -> str:
    """Group files by role: the commit, a delete file, or a segment file by name."""
    if relative.startswith("commit-"):
        return "commit file"
    if relative.startswith("deletes/"):
        return "delete file"
    return "segment " + relative.split("/", 2)[-1]


def markdown(report: dict) -> str:
    t = report["totals"]
    lines = ["# Corruption: a flipped byte or a truncation in every file of a segment and of a commit", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs", "",
             f"- damaged copies: {t['trials']}; **`lsr index verify` detected {t['verify_detects']}**; "
             f"**process crashes: {t['crashes']}**",
             f"- opened with checksums (the default): **answered silently: {t['checked_silent']}**, "
             f"unclear errors: {t['checked_unclear']}, clear errors: "
             f"{t['trials'] - t['crashes'] - t['checked_silent'] - t['checked_unclear']}",
             f"- opened with checksums off (structure checks only): errors {t['structure_errors']}, answered "
             f"{t['structure_answered']} (a changed value inside its range is what only the checksums see)",
             "", "| file | damaged copies | verify detects | crashes | silent answers (checksums on) | "
             "answered with checksums off |", "|---|---|---|---|---|---|"]
    for name, row in sorted(report["by_file"].items()):
        lines.append(f"| {name} | {row['trials']} | {row['verify_detects']} | {row['crashes']} | "
                     f"{row['checked_silent']} | {row['structure_answered']} |")
    if report["failures"]:
        lines += ["", "Failures:", *[f"- {json.dumps(f)[:300]}" for f in report["failures"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        report = run(args.flips, Path(work), args.seed)
    publish(report, markdown, "corruption_test.py", argv, args.out)
    t = report["totals"]
    return 1 if t["crashes"] or t["verify_detects"] < t["trials"] or t["checked_silent"] or t["checked_unclear"] else 0


if __name__ == "__main__":
    sys.exit(main())
