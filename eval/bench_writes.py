"""Write throughput of the index layer (vectors given, no encoder) and what it does to search.

    python eval/bench_writes.py /tmp/lsr-bench-segments/one /tmp/bench-1m --seconds 30 --pin --threads 16 \
        --out eval/results/bench_writes_1m

A copy of an index (hard links) is served by two processes, as two service workers would:
a writer process adds documents (vectors of the collection's documents under new ids) from
``--threads`` threads, paced to ``--rate`` adds per second, with the write-ahead log's group
commit (threads share fsyncs), flushing and merging in the background as the service does;
a search process answers the sampled queries one at a time (safe BMP, k = 10), refreshing
before each (so it sees every acknowledged write).

The searcher alternates search by search between that copy and a second one that nobody
writes (the control), each search with the next query (so each reads its data as cold as
one query after another does). Search latency is measured alone (no writer), then while the
writes go into the first copy; the pair of phases runs ``--repeats`` times, one after the
other, and the writer then runs unpaced to find its ceiling. Within the writing phase, the
written copy against the control is the index's own work (new segments, the buffer,
refreshes), measured search by search in the same seconds, so free of the drift between
phases; the control against the alone phase is the machine's sharing (caches, memory
bandwidth, the hypervisor), and drifts with the machine.
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


def _searcher(paths: tuple[str, str], collection: str, num_queries: int, seconds: float, ready, start, results,
              cpus: list[int] | None) -> None:
    _pin(cpus)
    from lsr.index.live import LiveIndex
    from lsr.index.search import search_sparse

    _, queries = sample_queries(Path(collection), num_queries)
    indexes = [LiveIndex(path, writer="never") for path in paths]
    for live in indexes:
        for q in range(len(queries)):  # warm up: page cache, JIT
            live.search_sparse(*queries.row(q), 10, scorer="bmp")
    ready.set()
    start.wait()  # the writer is ready too: the clocks start together
    # What LiveIndex.search_sparse does, timed in its two parts: the refresh (new log records,
    # a new commit) and the search of the view it returns; the two indexes take turns, and an
    # odd cycle of queries gives each of them every query.
    cycle = len(queries) - (len(queries) % 2 == 0)
    rows: list[dict[str, list]] = [{"times": [], "refreshes": [], "segments": [], "buffered": []} for _ in paths]
    deadline, step = time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline:
        live, row = indexes[step % 2], rows[step % 2]
        started = time.perf_counter()
        view = live.refresh()
        refreshed = time.perf_counter()
        keys, _ = search_sparse(view, *queries.row(step % cycle), 10, scorer="bmp")
        view.doc_ids(keys)
        row["times"].append((time.perf_counter() - started) * 1000)
        row["refreshes"].append((refreshed - started) * 1000)
        row["segments"].append(len(view.segments))
        row["buffered"].append(view.buffer.num_live if view.buffer is not None else 0)
        step += 1
    results.put([_latency_summary(row, live) for row, live in zip(rows, indexes)])
    for live in indexes:
        live.close()


def _latency_summary(row: dict[str, list], live) -> dict:
    times, refreshes = row["times"], row["refreshes"]
    return {"searches": len(times), "p50_ms": float(np.percentile(times, 50)), "mean_ms": float(np.mean(times)),
            "p99_ms": float(np.percentile(times, 99)), "refresh_p50_ms": float(np.percentile(refreshes, 50)),
            "refresh_mean_ms": float(np.mean(refreshes)), "segments_mean": float(np.mean(row["segments"])),
            "buffered_mean": float(np.mean(row["buffered"])), "segments_seen": len(live.refresh().segments)}


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
    began, cpu_began = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=add, args=(w,), daemon=True) for w in range(threads)]
    for thread in workers:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu_share = (time.process_time() - cpu_began) / elapsed  # of one CPU, every thread of the writer
    all_latencies = [x for worker in latencies for x in worker]
    results.put({"adds": sum(counts), "adds_per_second": sum(counts) / elapsed,
                 "add_p50_ms": float(np.percentile(all_latencies, 50)),
                 "add_p99_ms": float(np.percentile(all_latencies, 99)), "writer_cpu": cpu_share,
                 "commits": live.commit.generation, "segments_at_end": len(live.commit.segments)})
    for thread in background:
        thread.join()
    live.close()


def run(index: Path, collection: Path, work: Path, rate: float, threads: int, seconds: float, queries: int,
        flush_docs: int, pin: bool, repeats: int = 2) -> dict:
    context = multiprocessing.get_context("spawn")
    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    search_cpus, write_cpus = (cpus[-1:], cpus[:-1]) if pin else (None, None)
    phases = [name for _ in range(repeats) for name in ("search alone", "search while writing")] + ["writes unpaced"]
    runs = []
    for phase in phases:
        copy, control = work / "index", work / "control"
        for directory in (copy, control):
            shutil.rmtree(directory, ignore_errors=True)
            link_copy(index, directory)
        ready, loaded, start = context.Event(), context.Event(), context.Event()
        searched, written = context.Queue(), context.Queue()
        processes = []
        if phase != "writes unpaced":
            processes.append(context.Process(target=_searcher, args=((str(copy), str(control)), str(collection),
                                                                     queries, seconds, ready, start, searched,
                                                                     search_cpus)))
        if phase != "search alone":
            processes.append(context.Process(target=_writer, args=(str(copy), str(collection), threads,
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
        row = {"phase": phase}
        if phase != "writes unpaced":
            row["written"], row["control"] = searched.get()
        if phase != "search alone":
            row["writes"] = written.get()
        for process in processes:
            process.join()
        runs.append(row)
        print(json.dumps(row), flush=True)
    pairs = []
    for alone, writing in zip(runs[0:-1:2], runs[1:-1:2]):
        # Alone, both copies are unwritten: their searches together are the reference.
        reference = float(np.median([alone["written"]["p50_ms"], alone["control"]["p50_ms"]]))
        pairs.append({"alone_p50_ms": reference, "p50_ratio": writing["written"]["p50_ms"] / reference,
                      "machine_p50_ratio": writing["control"]["p50_ms"] / reference,
                      "index_p50_ratio": writing["written"]["p50_ms"] / writing["control"]["p50_ms"],
                      "index_mean_ratio": writing["written"]["mean_ms"] / writing["control"]["mean_ms"]})
    return {"runs": runs, "pairs": pairs,
            **{key: float(np.median([pair[key] for pair in pairs]))
               for key in ("p50_ratio", "machine_p50_ratio", "index_p50_ratio", "index_mean_ratio")},
            "rate": rate, "threads": threads, "seconds": seconds, "flush_docs": flush_docs, "repeats": repeats,
            "cpus": {"searcher": search_cpus, "writer": write_cpus} if pin else "shared"}


def markdown(report: dict) -> str:
    runs, pairs = report["runs"], report["pairs"]
    free = runs[-1]["writes"]
    lines = [
        "# Writes through the index layer (vectors given) and search beside them", "",
        f"Two processes on one index of {report['docs']:,} documents: a writer ({report['threads']} threads, group "
        f"commit, flushes every {report['flush_docs']} writes or second, merges in the background) and a searcher "
        f"(safe BMP, k = 10, one query at a time, a refresh before each) that alternates search by search between "
        f"the written copy and a control copy nobody writes. {report['seconds']:.0f} s per phase; the pair of "
        f"phases (alone, writing) ran {report['repeats']} times, one after the other.", "",
        "| phase | adds/s | add p50 / p99 ms | writer CPU | search p50 / mean / p99 ms: written copy | control copy "
        "| refresh p50 / mean ms | segments (mean) | buffered docs (mean) |",
        "|---|---|---|---|---|---|---|---|---|"]
    for row in runs[:-1]:
        written, control, writes = row["written"], row["control"], row.get("writes")
        paced = (f"{writes['adds_per_second']:.0f} | {writes['add_p50_ms']:.2f} / {writes['add_p99_ms']:.2f} | "
                 f"{writes['writer_cpu']:.2f}") if writes else "- | - | -"
        lines.append(f"| {row['phase']} | {paced} | {written['p50_ms']:.3f} / {written['mean_ms']:.3f} / "
                     f"{written['p99_ms']:.2f} | {control['p50_ms']:.3f} / {control['mean_ms']:.3f} / "
                     f"{control['p99_ms']:.2f} | {written['refresh_p50_ms']:.3f} / {written['refresh_mean_ms']:.3f} | "
                     f"{written['segments_mean']:.1f} | {written['buffered_mean']:.0f} |")
    lines += [f"| writes unpaced | **{free['adds_per_second']:.0f}** | {free['add_p50_ms']:.2f} / "
              f"{free['add_p99_ms']:.2f} | {free['writer_cpu']:.2f} | - | - | - | {free['segments_at_end']} at the end "
              f"| - |", "",
              "| pair | search p50 alone ms | written / alone (the target) | control / alone (the machine's sharing) "
              "| written / control p50 (the index's own work) | the same, mean |", "|---|---|---|---|---|---|",
              *[f"| {i + 1} | {pair['alone_p50_ms']:.3f} | {pair['p50_ratio']:.3f}x | {pair['machine_p50_ratio']:.3f}x | "
                f"{pair['index_p50_ratio']:.3f}x | {pair['index_mean_ratio']:.3f}x |" for i, pair in enumerate(pairs)],
              "",
              f"Search p50 while writing / alone, median over the pairs: **{report['p50_ratio']:.3f}x**; of it the "
              f"index's own work (written / control, the same seconds) **{report['index_p50_ratio']:.3f}x** and the "
              f"machine's sharing {report['machine_p50_ratio']:.3f}x. Writer CPU: the writer process's CPU time "
              f"over the phase, in CPUs.", "",
              f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs ("
              + (f"searcher pinned to CPU {report['cpus']['searcher']}, writer to {report['cpus']['writer']}"
                 if report["cpus"] != "shared" else "both processes share them") + ")  ",
              f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path, help="an index of the collection (copied by hard links)")
    parser.add_argument("collection", type=Path)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--flush-docs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2, help="pairs of phases (alone, writing)")
    parser.add_argument("--pin", action="store_true",
                        help="the searcher on the last CPU, the writer on the others (as on a machine with a "
                             "core for each), instead of both sharing every CPU")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lsr-bench-writes"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(args.index, args.collection, args.work, args.rate, args.threads, args.seconds, args.queries,
                 args.flush_docs, args.pin, args.repeats)
    from lsr.index.commit import read_newest_commit

    report.update(docs=read_newest_commit(args.index).num_docs)
    publish(report, markdown, "bench_writes.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
