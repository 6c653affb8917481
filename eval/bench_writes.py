"""Write throughput of the index layer (vectors given, no encoder) and what it does to search.

    python eval/bench_writes.py /tmp/lsr-bench-segments/one /tmp/bench-1m --seconds 30 --pin --threads 16 \
        --out eval/results/bench_writes_1m

A copy of an index (hard links) is served by two processes, as two service workers would:
a writer process adds documents (vectors of the collection's documents under new ids) from
``--threads`` threads, paced to ``--rate`` adds per second, with the write-ahead log's group
commit (threads share fsyncs), flushing and merging in the background as the service does;
a search process answers the sampled queries one at a time (safe BMP, k = 10), refreshing
before each (so it sees every acknowledged write). Search latency is measured first alone,
then beside the same writes into another copy of the index (what the machine's sharing costs:
caches, memory bandwidth, the hypervisor; the searched index does not change), then while the
writes go into the searched index (adding what the index's own work costs: new segments, the
buffer, refreshes); then the writer runs unpaced to find its ceiling.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from lsr.eval.bench_collection import document_vectors, link_copy, sample_queries
from lsr.eval.report import publish


def _pin(cpus: list[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def _searcher(path: str, collection: str, num_queries: int, seconds: float, ready, start, results,
              cpus: list[int] | None) -> None:
    _pin(cpus)
    from lsr.index.live import LiveIndex
    from lsr.index.search import search_sparse

    _, queries = sample_queries(Path(collection), num_queries)
    with LiveIndex(path, writer="never") as live:
        for q in range(len(queries)):  # warm up: page cache, JIT
            live.search_sparse(*queries.row(q), 10, scorer="bmp")
        ready.set()
        start.wait()  # the writer is ready too: the clocks start together
        # What LiveIndex.search_sparse does, timed in its two parts: the refresh (new log
        # records, a new commit) and the search of the view it returns.
        times, refreshes, segments, buffered = [], [], [], []
        deadline, q = time.perf_counter() + seconds, 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            view = live.refresh()
            refreshed = time.perf_counter()
            keys, _ = search_sparse(view, *queries.row(q % len(queries)), 10, scorer="bmp")
            view.doc_ids(keys)
            times.append((time.perf_counter() - started) * 1000)
            refreshes.append((refreshed - started) * 1000)
            segments.append(len(view.segments))
            buffered.append(view.buffer.num_live if view.buffer is not None else 0)
            q += 1
        results.put({"searches": len(times), "p50_ms": float(np.percentile(times, 50)),
                     "mean_ms": float(np.mean(times)), "p99_ms": float(np.percentile(times, 99)),
                     "refresh_p50_ms": float(np.percentile(refreshes, 50)),
                     "refresh_mean_ms": float(np.mean(refreshes)),
                     "segments_mean": float(np.mean(segments)), "buffered_mean": float(np.mean(buffered)),
                     "segments_seen": len(live.refresh().segments)})


def _writer(path: str, collection: str, threads: int, rate: float | None, seconds: float, loaded, start, results,
            flush_docs: int, cpus: list[int] | None = None) -> None:
    _pin(cpus)
    from lsr.index.live import LiveIndex

    live = LiveIndex(path, writer="required")
    live.flush_policy.max_docs = flush_docs
    live.flush_policy.max_seconds = 1.0
    pool = document_vectors(Path(collection), 20_000)  # read before the clock starts
    loaded.set()
    stop = threading.Event()
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def maintain() -> None:
        while not stop.wait(0.25):
            live.maintain()

    def merge() -> None:
        while not stop.wait(1.0):
            live.merge()

    def add(worker: int) -> None:
        rng = np.random.default_rng(worker)
        interval = threads / rate if rate else 0.0
        next_time = time.perf_counter()
        while not stop.is_set():
            terms, weights = pool[int(rng.integers(len(pool)))]
            began = time.perf_counter()
            live.add(f"w{worker}-{counts[worker]}", "", "", terms, weights)
            latencies[worker].append((time.perf_counter() - began) * 1000)
            counts[worker] += 1
            if interval:
                next_time += interval
                time.sleep(max(0.0, next_time - time.perf_counter()))

    background = [threading.Thread(target=maintain, daemon=True), threading.Thread(target=merge, daemon=True)]
    for thread in background:
        thread.start()
    start.wait()
    began = time.perf_counter()
    workers = [threading.Thread(target=add, args=(w,), daemon=True) for w in range(threads)]
    for thread in workers:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - began
    all_latencies = [x for worker in latencies for x in worker]
    results.put({"adds": sum(counts), "adds_per_second": sum(counts) / elapsed,
                 "add_p50_ms": float(np.percentile(all_latencies, 50)),
                 "add_p99_ms": float(np.percentile(all_latencies, 99)),
                 "commits": live.commit.generation, "segments_at_end": len(live.commit.segments)})
    for thread in background:
        thread.join()
    live.close()


def run(index: Path, collection: Path, work: Path, rate: float, threads: int, seconds: float, queries: int,
        flush_docs: int, pin: bool) -> dict:
    context = multiprocessing.get_context("spawn")
    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    search_cpus, write_cpus = (cpus[-1:], cpus[:-1]) if pin else (None, None)
    results = {}
    for phase in ("search alone", "search beside writes elsewhere", "search while writing", "writes unpaced"):
        copy, other = work / "index", work / "other"
        for directory in (copy, other):
            shutil.rmtree(directory, ignore_errors=True)
        link_copy(index, copy)
        written_copy = copy
        if phase == "search beside writes elsewhere":
            link_copy(index, other)
            written_copy = other
        ready, loaded, start = context.Event(), context.Event(), context.Event()
        searched, written = context.Queue(), context.Queue()
        processes = []
        if phase != "writes unpaced":
            processes.append(context.Process(target=_searcher, args=(str(copy), str(collection), queries, seconds,
                                                                     ready, start, searched, search_cpus)))
        if phase != "search alone":
            processes.append(context.Process(target=_writer, args=(str(written_copy), str(collection), threads,
                                                                   rate if phase != "writes unpaced" else None,
                                                                   seconds, loaded, start, written, flush_docs,
                                                                   write_cpus)))
        for process in processes:
            process.start()
        if phase != "writes unpaced":
            ready.wait()
        if phase != "search alone":
            loaded.wait()
        start.set()
        row = {}
        if phase != "writes unpaced":
            row["search"] = searched.get()
        if phase != "search alone":
            row["writes"] = written.get()
        for process in processes:
            process.join()
        results[phase] = row
        print(f"{phase}: {json.dumps(row)}", flush=True)
    base, loaded = results["search alone"]["search"], results["search while writing"]["search"]
    beside = results["search beside writes elsewhere"]["search"]
    return {"phases": results, "p50_ratio": loaded["p50_ms"] / base["p50_ms"],
            "mean_ratio": loaded["mean_ms"] / base["mean_ms"],
            "machine_p50_ratio": beside["p50_ms"] / base["p50_ms"],
            "index_p50_ratio": loaded["p50_ms"] / beside["p50_ms"], "rate": rate, "threads": threads,
            "seconds": seconds, "flush_docs": flush_docs,
            "cpus": {"searcher": search_cpus, "writer": write_cpus} if pin else "shared"}


def markdown(report: dict) -> str:
    phases = report["phases"]
    base, loaded = phases["search alone"]["search"], phases["search while writing"]["search"]
    paced, free = phases["search while writing"]["writes"], phases["writes unpaced"]["writes"]
    beside, elsewhere = (phases["search beside writes elsewhere"]["search"],
                         phases["search beside writes elsewhere"]["writes"])
    return "\n".join([
        "# Writes through the index layer (vectors given) and search beside them", "",
        f"Two processes on one index of {report['docs']:,} documents: a writer ({report['threads']} threads, group "
        f"commit, flushes every {report['flush_docs']} writes or second, merges in the background) and a searcher "
        f"(safe BMP, k = 10, one query at a time, a refresh before each). {report['seconds']:.0f} s per phase.", "",
        "| phase | adds/s | add p50 / p99 ms | search p50 / mean / p99 ms | segments |", "|---|---|---|---|---|",
        f"| search alone | - | - | {base['p50_ms']:.3f} / {base['mean_ms']:.3f} / {base['p99_ms']:.2f} | "
        f"{base['segments_seen']} |",
        f"| writes paced at {report['rate']:.0f}/s into another copy, search beside | "
        f"{elsewhere['adds_per_second']:.0f} | {elsewhere['add_p50_ms']:.2f} / {elsewhere['add_p99_ms']:.2f} | "
        f"{beside['p50_ms']:.3f} / {beside['mean_ms']:.3f} / {beside['p99_ms']:.2f} | {beside['segments_seen']} |",
        f"| writes paced at {report['rate']:.0f}/s, search beside | {paced['adds_per_second']:.0f} | "
        f"{paced['add_p50_ms']:.2f} / {paced['add_p99_ms']:.2f} | {loaded['p50_ms']:.3f} / {loaded['mean_ms']:.3f} / "
        f"{loaded['p99_ms']:.2f} | {loaded['segments_seen']} |",
        f"| writes unpaced | **{free['adds_per_second']:.0f}** | {free['add_p50_ms']:.2f} / {free['add_p99_ms']:.2f} "
        f"| - | {free['segments_at_end']} |", "",
        f"Search p50 while writing / alone: **{report['p50_ratio']:.3f}x** (mean {report['mean_ratio']:.3f}x): "
        f"the machine's sharing (writes into another copy / alone) {report['machine_p50_ratio']:.3f}x, "
        f"the index's own work (writes into the searched index / into another copy) "
        f"{report['index_p50_ratio']:.3f}x.", "",
        "Where a search's time goes (p50 / mean ms of the refresh, which reads new log records into "
        "the buffer and opens new commits, inside the search's total; the segments and buffered "
        "documents it searched, on average):", "",
        "| phase | refresh p50 / mean ms | search p50 / mean ms | segments | buffered docs |", "|---|---|---|---|---|",
        *[f"| {name} | {row['refresh_p50_ms']:.3f} / {row['refresh_mean_ms']:.3f} | {row['p50_ms']:.3f} / "
          f"{row['mean_ms']:.3f} | {row['segments_mean']:.1f} | {row['buffered_mean']:.0f} |"
          for name, row in (("search alone", base), ("beside writes into another copy", beside),
                            ("beside writes into the searched index", loaded))], "",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs ("
        + (f"searcher pinned to CPU {report['cpus']['searcher']}, writer to {report['cpus']['writer']}"
           if report["cpus"] != "shared" else "both processes share them") + ")  ",
        f"Command: `{report['command']}`", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path, help="an index of the collection (copied by hard links)")
    parser.add_argument("collection", type=Path)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--flush-docs", type=int, default=1000)
    parser.add_argument("--pin", action="store_true",
                        help="the searcher on the last CPU, the writer on the others (as on a machine with a "
                             "core for each), instead of both sharing every CPU")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lsr-bench-writes"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(args.index, args.collection, args.work, args.rate, args.threads, args.seconds, args.queries,
                 args.flush_docs, args.pin)
    from lsr.index.commit import read_newest_commit

    report.update(docs=read_newest_commit(args.index).num_docs)
    publish(report, markdown, "bench_writes.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
