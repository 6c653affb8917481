"""Real kills: SIGKILL a writer at random moments of appends, flushes and merges under load.

    python eval/kill_test.py --trials 200 --out eval/results/kill_test

Each trial starts `eval/kill_writer.py` on the same index (16 client threads adding,
replacing, deleting and searching; flushes every 40 writes; merges whenever there are three
segments), reads the operations it begins and acknowledges, and kills it with SIGKILL at a
random moment between 0.2 and 2.5 s after it is ready. The index is then opened again (a
failed open is counted) and every document a client ever wrote is checked: its state must be
the one its acknowledged writes give, or, for a client's one write in flight at the kill,
the state after it. Search results are compared with brute force over what the index holds.

SIGKILL keeps the page cache, so this checks recovery logic (torn log tails, half-built
segments, commits in progress, interrupted merges), not fsync; `eval/crash_replay.py` checks
what survives a power cut.

A second part kills a process in the middle of an append: it takes the log's lock, writes
half a record and is killed holding it; another process must go on appending (0 failures),
cut the torn record, and lose nothing acknowledged.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.eval.crash_sim import brute_force_top_k
from lsr.eval.report import machine_description, save_result
from lsr.index.build import build_index
from lsr.index.live import LiveIndex
from lsr.index.sparse_batch import SparseBatch

VOCAB = 200


def read_lines(process: subprocess.Popen, until: float, buffer: bytearray) -> list[dict]:
    """Complete JSON lines the child printed until ``until`` (monotonic) or its death."""
    records = []
    fd = process.stdout.fileno()
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], max(0.0, until - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        buffer.extend(chunk)
        *lines, rest = buffer.split(b"\n")
        buffer[:] = rest
        records += [json.loads(line) for line in lines if line]
    return records


def drain(process: subprocess.Popen, buffer: bytearray) -> list[dict]:
    """What the killed child printed before it died (a cut last line is dropped: never acknowledged)."""
    data = bytes(buffer) + process.stdout.read()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.split(b"\n") if line]


class Model:
    """Acknowledged document states (id -> (terms, weights) or None when deleted)."""

    def __init__(self, initial: dict) -> None:
        self.docs = dict(initial)

    def apply(self, records: list[dict]) -> list[dict]:
        """Apply acknowledged operations; returns the operations left in flight."""
        begun = {}
        for record in records:
            if "begin" in record:
                begun[tuple(record["begin"])] = record
            elif "ack" in record:
                op = begun.pop(tuple(record["ack"]))
                self.docs[op["id"]] = (op["terms"], op["weights"]) if op["op"] == "add" else None
        return list(begun.values())


def held_state(live: LiveIndex, doc_id: str):
    if not live.contains(doc_id):
        return None
    terms, weights, _, _ = live.document_vector(doc_id)
    return terms, weights


def same(held, expected) -> bool:
    if held is None or expected is None:
        return held is None and expected is None
    stored, wanted = np.zeros(VOCAB), np.zeros(VOCAB)
    stored[np.asarray(held[0], dtype=np.int64)] = held[1]
    wanted[np.asarray(expected[0], dtype=np.int64)] = expected[1]
    return bool(np.all(np.abs(stored - wanted) <= 0.02))  # a few impact levels of weights in [0.05, 1.05]


def verify(live: LiveIndex, model: Model, in_flight: list[dict], rng) -> list[str]:
    """Check every document against the model; fold the in-flight writes' outcome into it."""
    problems = []
    pending = {op["id"]: op for op in in_flight}
    for doc_id, expected in list(model.docs.items()):
        held = held_state(live, doc_id)
        if same(held, expected):
            continue
        op = pending.get(doc_id)
        after = None if op is None or op["op"] == "delete" else (op["terms"], op["weights"])
        if op is not None and same(held, after):
            model.docs[doc_id] = after
            continue
        problems.append(f"{doc_id}: holds {'nothing' if held is None else 'another vector'}, acknowledged "
                        f"{'deletion' if expected is None else 'a vector'}")
    for doc_id, op in pending.items():
        if doc_id not in model.docs:  # a new document whose add was in flight
            held = held_state(live, doc_id)
            if held is not None and same(held, (op["terms"], op["weights"])):
                model.docs[doc_id] = (op["terms"], op["weights"])
            elif held is not None:
                problems.append(f"{doc_id}: holds a vector no write gave it")
    live_count = sum(1 for v in model.docs.values() if v is not None)
    if live.num_docs != live_count:
        problems.append(f"the index holds {live.num_docs} documents, the acknowledged writes {live_count}")
    view = live.refresh()
    for _ in range(3):
        terms = np.sort(rng.choice(VOCAB, size=8, replace=False))
        weights = rng.random(8).astype(np.float32) + 0.05
        for scorer in ("exhaustive", "bmp"):
            _, scores = live.search_sparse(terms, weights, 10, scorer=scorer)
            expected = brute_force_top_k(view, terms, weights, 10)
            if not np.allclose(scores, [s for _, s in expected], rtol=1e-9):
                problems.append(f"{scorer} search differs from brute force")
    return problems


def writer_kills(path: Path, trials: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    initial = {f"d{i}": (np.sort(rng.choice(VOCAB, 8, replace=False)).tolist(), (rng.random(8) + 0.05).tolist())
               for i in range(300)}
    rows = [sp.csr_matrix((np.array(w, np.float32), (np.zeros(len(t), int), t)), shape=(1, VOCAB))
            for t, w in initial.values()]
    build_index(path, [(list(initial), SparseBatch.from_scipy(sp.vstack(rows).tocsr()), None)], VOCAB,
                reorder="bp", block_size=8)
    model = Model(initial)
    result = {"trials": trials, "acknowledged_writes": 0, "in_flight_at_kill": 0, "failed_opens": 0,
              "lost_or_wrong": 0, "problems": [], "flushes_and_merges_seen": 0, "kill_after_s": []}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for trial in range(trials):
        child = subprocess.Popen([sys.executable, "-m", "lsr.eval.kill_writer", str(path), str(seed * 100_000 + trial)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        buffer = bytearray()
        records = []
        deadline = time.monotonic() + 120
        while not any("ready" in r for r in records) and time.monotonic() < deadline and child.poll() is None:
            records += read_lines(child, time.monotonic() + 0.5, buffer)
        if not any("ready" in r for r in records):
            child.kill()
            raise RuntimeError(f"trial {trial}: the writer did not start: {child.stderr.read().decode()[-2000:]}")
        delay = float(rng.uniform(0.2, 2.5))
        records += read_lines(child, time.monotonic() + delay, buffer)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        records += drain(child, buffer)
        child.stdout.close()
        child.stderr.close()
        in_flight = model.apply(records)
        result["acknowledged_writes"] += sum(1 for r in records if "ack" in r)
        result["in_flight_at_kill"] += len(in_flight)
        result["kill_after_s"].append(round(delay, 3))
        try:
            live = LiveIndex(path, writer="required")
        except Exception as error:
            result["failed_opens"] += 1
            result["problems"].append(f"trial {trial}: open failed: {type(error).__name__}: {error}")
            break
        with live:
            problems = verify(live, model, in_flight, rng)
            result["flushes_and_merges_seen"] = live.commit.generation
        result["lost_or_wrong"] += len(problems)
        result["problems"] += [f"trial {trial}: {p}" for p in problems[:5]]
        if (trial + 1) % 20 == 0:
            print(f"trial {trial + 1}/{trials}: {result['acknowledged_writes']} acknowledged writes so far, "
                  f"{result['failed_opens']} failed opens, {result['lost_or_wrong']} problems", flush=True)
    return result


def mid_append_kills(path: Path, trials: int) -> dict:
    """A process killed holding the log's lock with half a record written; another keeps writing."""
    script = (
        "import fcntl, os, sys, time\n"
        "from lsr.index.wal import WriteAheadLog, encode_body, _frame, wal_files\n"
        "wal = WriteAheadLog(sys.argv[1])\n"
        "with wal._locked():\n"
        "    first, end, last = wal._catch_up()\n"
        "    frame = _frame(last + 1, encode_body('add', 'torn', '', '', [1], [1.0]))\n"
        "    _, path = wal_files(wal.directory)[-1]\n"
        "    fd = os.open(path, os.O_WRONLY | os.O_APPEND)\n"
        "    os.write(fd, frame[: len(frame) // 2])\n"
        "    print('half', flush=True)\n"
        "    time.sleep(600)\n"
    )
    result = {"trials": trials, "failed_requests_after_kill": 0, "acknowledged_writes": 0, "lost": 0, "torn_visible": 0}
    with LiveIndex(path, writer="never") as other:
        for trial in range(trials):
            child = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
            assert child.stdout.readline().strip() == "half"
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
            for i in range(5):  # the other process goes on writing at once
                try:
                    other.add(f"after-{trial}-{i}", "", "", [2 + i], [1.0])
                    result["acknowledged_writes"] += 1
                except Exception:
                    result["failed_requests_after_kill"] += 1
        with LiveIndex(path, writer="never") as reopened:
            result["lost"] = sum(1 for t in range(trials) for i in range(5) if not reopened.contains(f"after-{t}-{i}"))
            result["torn_visible"] = int(reopened.contains("torn"))
    return result


def markdown(report: dict) -> str:
    kills, mid = report["writer_kills"], report["mid_append"]
    return "\n".join([
        "# Real kills: SIGKILL of a writer under load",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs",
        "",
        f"- **{kills['trials']} trials** of `eval/kill_writer.py` (16 client threads adding, replacing, deleting "
        f"and searching; a flush every 40 writes; merges whenever three segments exist) killed with SIGKILL "
        f"0.2 to 2.5 s after start",
        f"- acknowledged writes: {kills['acknowledged_writes']}; writes in flight at a kill: "
        f"{kills['in_flight_at_kill']}; commits made over the run: {kills['flushes_and_merges_seen']}",
        f"- **failed opens: {kills['failed_opens']}**; **acknowledged writes lost or wrong: {kills['lost_or_wrong']}**",
        "",
        f"- **{mid['trials']} processes killed in the middle of an append** (holding the log's lock, half a record "
        f"written); another process then wrote {mid['acknowledged_writes']} documents: **failed writes after the "
        f"kill: {mid['failed_requests_after_kill']}**, lost: {mid['lost']}, torn record visible: {mid['torn_visible']}",
        "",
        "Problems:" if kills["problems"] else "No problems.",
        *[f"- {p}" for p in kills["problems"][:20]],
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--mid-append-trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        kills = writer_kills(Path(work) / "ix", args.trials, args.seed)
        mid = mid_append_kills(Path(work) / "ix", args.mid_append_trials)
    report = {"writer_kills": kills, "mid_append": mid, "machine": machine_description(),
              "command": "python eval/kill_test.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
    print(markdown(report))
    if args.out:
        save_result(args.out, report, markdown(report))
    failed = kills["failed_opens"] or kills["lost_or_wrong"] or mid["failed_requests_after_kill"] or mid["lost"] \
        or mid["torn_visible"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
