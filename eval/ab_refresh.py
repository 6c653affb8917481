"""A reader's refresh against another revision's, interleaved in one process with cold caches.

    python eval/ab_refresh.py /tmp/lsr-bench-segments/one /tmp/bench-1m --rev 2ef859d --cpu 1 \
        --out eval/results/ab_refresh_1m

Machine drift between two benchmark runs on this machine is often larger than a change to
the refresh, so this compares the two versions in the same seconds: the write-ahead log and
write buffer modules of ``--rev`` (``index/wal.py`` and ``index/buffer.py`` as git has them)
are loaded beside the current ones, and two readers of one copy of the index, one of each
version, take turns reading the records a writer appended (``--batch`` per turn, one fsync
each), applying them to their buffer and taking its view: what a refresh does with new
records. Before each timed refresh the process searches a second copy of the index (safe
BMP, k = 10), as a searching service would, so the refresh runs with the caches a search
leaves. The buffers are emptied every 1,000 turns, as a flush would. Batches of 1, 4 and 16
records by default.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lsr.eval.bench_collection import document_vectors, link_copy, sample_queries
from lsr.eval.report import publish

REPO = Path(__file__).resolve().parent.parent


def _load_revision(rev: str, directory: Path) -> tuple:
    """The log and buffer modules of git revision ``rev``, loaded under names of their own."""
    modules = []
    for name in ("wal", "buffer"):
        path = directory / f"{name}.py"
        path.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:index/{name}.py"], check=True,
                                        capture_output=True).stdout)
        spec = importlib.util.spec_from_file_location(f"revision_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return tuple(modules)


def _apply(buffer, records) -> None:
    if hasattr(buffer, "apply_many"):
        buffer.apply_many(records)
    else:  # revisions before the batched refresh
        for record in records:
            buffer.apply(record)


def run(index: Path, collection: Path, rev: str, batch: int, turns: int, work: Path) -> dict:
    from lsr.index import buffer as current_buffer
    from lsr.index import wal as current_wal
    from lsr.index.live import LiveIndex
    from lsr.index.search import search_sparse

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    link_copy(index, work / "written")
    link_copy(index, work / "searched")
    old_wal, old_buffer = _load_revision(rev, work)
    _, queries = sample_queries(collection, 301)
    pool = document_vectors(collection, 5000)
    writer = LiveIndex(work / "written", writer="required")
    writer.flush_policy.max_docs, writer.flush_policy.max_seconds = 10**9, 1e9
    searched = LiveIndex(work / "searched", writer="never").refresh()
    vocab_size = writer.vocab_size
    readers = {rev: [old_wal.WriteAheadLog(work / "written"), old_buffer.WriteBuffer(vocab_size, None), 0],
               "current": [current_wal.WriteAheadLog(work / "written"), current_buffer.WriteBuffer(vocab_size, None), 0]}
    times: dict[str, list[float]] = {name: [] for name in readers}
    written = 0
    for turn in range(turns + 200):  # the first 200 turns warm up
        if turn % 1000 == 999:
            for reader in readers.values():
                reader[1] = reader[1].drop_through(reader[2])
        writer.add_many([(f"ab{written + j}", "", "", *pool[(written + j) % len(pool)], None) for j in range(batch)])
        written += batch
        for i, name in enumerate(list(readers)[:: 1 if turn % 2 else -1]):  # each version first in turn
            search_sparse(searched, *queries.row((2 * turn + i) % len(queries)), 10, scorer="bmp")
            log, buffer, seq = readers[name]
            began = time.perf_counter()
            records = log.read(seq)
            _apply(buffer, records)
            buffer.view()
            if turn >= 200:
                times[name].append((time.perf_counter() - began) * 1e6)
            readers[name][2] = records[-1].seq
    writer.close()
    return {name: {"p50_us": float(np.median(t)), "mean_us": float(np.mean(t))} for name, t in times.items()}


def markdown(report: dict) -> str:
    rev = report["rev"]
    lines = ["# A reader's refresh against another revision's, interleaved, cold caches", "",
             f"Records read, applied to the write buffer and viewed, by a reader of the current code and one of "
             f"{rev}'s `index/wal.py` and `index/buffer.py`, taking turns in one process, a search of a second copy "
             f"of the index before each refresh; {report['turns']} turns per batch size. Microseconds.", "",
             f"| records per refresh | {rev} p50 / mean | current p50 / mean | current / {rev}, p50 | mean |",
             "|---|---|---|---|---|"]
    for row in report["batches"]:
        old, new = row[rev], row["current"]
        lines.append(f"| {row['batch']} | {old['p50_us']:.1f} / {old['mean_us']:.1f} | {new['p50_us']:.1f} / "
                     f"{new['mean_us']:.1f} | {new['p50_us'] / old['p50_us']:.3f}x | "
                     f"{new['mean_us'] / old['mean_us']:.3f}x |")
    pinned = f" (pinned to CPU {report['cpu']})" if report["cpu"] is not None else ""
    lines += ["", f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs{pinned}  ",
              f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path, help="an index of the collection (copied by hard links)")
    parser.add_argument("collection", type=Path)
    parser.add_argument("--rev", required=True, help="the git revision to compare with")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16],
                        help="records appended (and read) per turn")
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, [args.cpu])
    report = {"rev": args.rev, "turns": args.turns, "cpu": args.cpu, "batches": []}
    for batch in args.batches:
        with tempfile.TemporaryDirectory(prefix="lsr-ab-refresh-") as work:
            row = run(args.index, args.collection, args.rev, batch, args.turns, Path(work) / "ab")
        report["batches"].append({"batch": batch, **row})
    publish(report, markdown, "ab_refresh.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
