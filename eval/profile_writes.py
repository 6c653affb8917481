"""Where a search's extra time beside writes goes: young segments, the buffer, the refresh.

    python eval/profile_writes.py /tmp/lsr-bench-segments/one /tmp/bench-1m --seconds 30 \
        --out eval/results/profile_writes_1m

A writer process adds documents into a copy of the index at ``--rate`` a second from 16
threads (as ``eval/bench_writes.py``'s, flushing every 1,000 writes or second and merging);
the searcher (pinned to the last CPU, the writer to the others) takes turns, search by search,
between four readings of the same moment: the written copy's refresh and view as a search
sees it (``full``); that view without the write buffer (``no buffer``); its first segment
(the index as it was) with the buffer (``first segment + buffer``); and a control copy that
nobody writes (``control``). Each search takes the next query of a cycle that no turn
repeats, so every search reads its data as cold as one query after another does (run twice
in a row, a query costs about half). Only the search itself is timed; the refresh of the
written copy is timed apart.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from lsr.eval.bench_collection import link_copy, sample_queries
from lsr.eval.bench_writes import _writer
from lsr.eval.report import publish

READINGS = ("full", "no buffer", "first segment + buffer", "control")


def run(index: Path, collection: Path, work: Path, rate: float, seconds: float, num_queries: int) -> dict:
    from lsr.index.live import LiveIndex
    from lsr.index.search import View, search_sparse

    written, control = work / "index", work / "control"
    for directory in (written, control):
        shutil.rmtree(directory, ignore_errors=True)
        link_copy(index, directory)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs at least 2 CPUs: the searcher on one, the writer on the others")
    os.sched_setaffinity(0, cpus[-1:])
    _, queries = sample_queries(collection, num_queries)
    cycle = len(queries) - (len(queries) % 2 == 0)  # odd: no turn repeats a query, each reading gets them all
    live, fixed = LiveIndex(written, writer="never"), LiveIndex(control, writer="never")
    for q in range(len(queries)):  # warm up: page cache, JIT
        live.search_sparse(*queries.row(q), 10, scorer="bmp")
        fixed.search_sparse(*queries.row(q), 10, scorer="bmp")
    context = multiprocessing.get_context("spawn")
    loaded, start, results = context.Event(), context.Event(), context.Queue()
    writer = context.Process(target=_writer, args=(str(written), str(collection), 16, rate, seconds + 5, loaded, start,
                                                   results, 1000, cpus[:-1]))
    writer.start()
    loaded.wait()
    start.set()
    time.sleep(3)  # the first flushes and merges
    times: dict[str, list[float]] = {name: [] for name in READINGS}
    refreshes, segments, buffered = [], [], []
    first_segment_kernels: dict[str, dict] = {}  # per first segment (by name): its kernel data, built once
    deadline, step = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        name = READINGS[step % len(READINGS)]
        if name == "control":
            view = fixed.refresh()
        else:
            began = time.perf_counter()
            view = live.refresh()
            refreshes.append((time.perf_counter() - began) * 1000)
            segments.append(len(view.segments))
            buffered.append(view.buffer.num_live if view.buffer is not None else 0)
            if name == "no buffer":
                view = View(view.segments, None, view.vocab_size, cache=view.cache)
            elif name == "first segment + buffer":
                first = view.segments[0]
                view = View(view.segments[:1], view.buffer, view.vocab_size,
                            cache=first_segment_kernels.setdefault(first.segment.name, {}))
        began = time.perf_counter()
        search_sparse(view, *queries.row(step % cycle), 10, scorer="bmp")
        times[name].append((time.perf_counter() - began) * 1000)
        step += 1
    writes = results.get()
    writer.join()
    live.close()
    fixed.close()
    return {"readings": {name: {"searches": len(t), "p50_ms": float(np.percentile(t, 50)),
                                "mean_ms": float(np.mean(t))} for name, t in times.items()},
            "refresh_p50_ms": float(np.percentile(refreshes, 50)), "refresh_mean_ms": float(np.mean(refreshes)),
            "segments_mean": float(np.mean(segments)), "buffered_mean": float(np.mean(buffered)),
            "writes": writes, "rate": rate, "seconds": seconds}


def markdown(report: dict) -> str:
    readings, control = report["readings"], report["readings"]["control"]
    writes = report["writes"]
    return "\n".join([
        "# Where a search's extra time beside writes goes", "",
        f"A writer adds {writes['adds_per_second']:.0f} documents a second into a copy of the index (writer CPU "
        f"{writes['writer_cpu']:.2f}); one searcher (safe BMP, k = 10) takes turns between four readings, each "
        f"search with the next query (cold). {report['seconds']:.0f} s. The written copy held "
        f"{report['segments_mean']:.1f} segments and {report['buffered_mean']:.0f} buffered documents on average; "
        f"its refresh took {report['refresh_p50_ms']:.3f} ms at p50 ({report['refresh_mean_ms']:.3f} mean), "
        "outside the search times below.", "",
        "| reading | searches | search p50 / mean ms | p50 over the control |", "|---|---|---|---|",
        *[f"| {name} | {row['searches']} | {row['p50_ms']:.3f} / {row['mean_ms']:.3f} | "
          f"{row['p50_ms'] / control['p50_ms']:.3f}x |" for name, row in readings.items()], "",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs (searcher on the last, writer "
        "on the others)  ",
        f"Command: `{report['command']}`", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path, help="an index of the collection (copied by hard links)")
    parser.add_argument("collection", type=Path)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lsr-profile-writes"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(args.index, args.collection, args.work, args.rate, args.seconds, args.queries)
    publish(report, markdown, "profile_writes.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
