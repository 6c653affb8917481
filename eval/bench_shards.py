"""The MS MARCO-scale simulation: a grown collection built as 1, 2, 4 and 8 shards on this machine.

    python ../shared/tools/make_bench_corpus.py --docs 8800000 --out /tmp/bench-8m8
    python eval/bench_shards.py /tmp/bench-8m8 --shards 8 4 2 1 --out eval/results/bench_shards_8m8

For each shard count S, every shard is built in its own child process the way ``lsr index
--shards S`` builds it (documents go to `index.shards.shard_of` their id; each shard is an
`index.build.IndexBuild`: segments of ``--segment-docs``, BP-reordered, merged into one), ``--jobs``
at a time; each child reports its wall time, its CPU time (user + system, threads included: the
figure that does not depend on what else the machine ran) and its peak resident set (VmHWM).

Then one child process opens the sharded index (checksums verified, as a server opens it) and
measures on the first ``--queries`` MS MARCO dev seed queries of the collection, safe BMP, one
thread per search:
- one client, k = 10 and k = 1000: each query searches the shards in turn and merges their top-k
  (what one process serving every shard does: ``total``), and each shard's own time is kept: the
  slowest shard of a query (``slowest shard``) is the fan-out's critical path when each shard has
  a machine of its own (network not included);
- QPS with 8 and 32 client threads searching at once (all shards in this process, on this
  machine's cores);
- the searcher's resident set after the runs.

Results are written after each shard count (a rerun skips the counts done and the shards already
built); the index is removed after its measurement unless ``--keep-index``. ``eval/cost_model.py``
projects deployments from the JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lsr.eval.bench_build import VOCAB_SIZE, child_result, directory_mb, read_chunks, run_child, status_mb, wait_child
from lsr.eval.cpu_usage import OtherLoad, own_cpu_seconds
from lsr.eval.report import command_line, machine_description

MSMARCO_DEV = 2  # queries/source.npy: 0 scifact, 1 nfcorpus, 2 msmarco-dev
KS = (10, 1000)
CLIENTS = (8, 32)


def shard_owners(collection: Path, num_shards: int, work: Path) -> Path:
    """The shard of every document ("d{i}"), computed once per shard count and kept in ``work``."""
    from lsr.index.shards import shards_of

    path = work / f"owners-{num_shards}.npy"
    if not path.exists():
        num_docs = json.loads((collection / "meta.json").read_text())["docs"]
        owners = np.concatenate([shards_of([f"d{i}" for i in range(start, min(start + 1_000_000, num_docs))],
                                           num_shards).astype(np.int16)
                                 for start in range(0, num_docs, 1_000_000)])
        np.save(work / "owners.tmp.npy", owners)
        (work / "owners.tmp.npy").rename(path)
    return path


def _build_shard(collection: str, out: str, owners_path: str, shard: int, num_shards: int, segment_docs: int,
                 queue) -> None:
    from lsr.index.build import IndexBuild

    baseline = status_mb("VmHWM")
    owners = np.load(owners_path, mmap_mode="r")
    started, cpu = time.perf_counter(), own_cpu_seconds()
    build = IndexBuild(out, VOCAB_SIZE, {"corpus": collection, "shard": shard, "shards": num_shards},
                       segment_docs=segment_docs, merge=True, background=True, reorder="bp", block_size=8)
    start = 0
    for ids, batch, _ in read_chunks(Path(collection), None):
        mine = np.flatnonzero(owners[start : start + len(ids)] == shard)
        if len(mine):
            build.add([ids[p] for p in mine], batch.take(mine), None)
        start += len(ids)
    build.finish(require_weights=False)
    queue.put({"shard": shard, "docs": build.num_docs, "seconds": time.perf_counter() - started,
               "cpu_seconds": own_cpu_seconds() - cpu, "peak_rss_mb": status_mb("VmHWM"), "baseline_rss_mb": baseline})


def build_shards(collection: Path, out: Path, work: Path, num_shards: int, segment_docs: int, jobs: int,
                 report=print) -> list[dict]:
    """Build every shard not built yet (``jobs`` children at once); each shard's build figures."""
    from lsr.index.shards import Manifest, shard_names, write_manifest

    owners = shard_owners(collection, num_shards, work)
    done_dir = work / f"built-{num_shards}"
    done_dir.mkdir(parents=True, exist_ok=True)
    results = {int(p.stem): json.loads(p.read_text()) for p in done_dir.glob("*.json")}
    todo = [s for s in range(num_shards) if s not in results]
    running: list[dict] = []
    while todo or running:
        while todo and len(running) < jobs:
            shard = todo.pop(0)
            directory = out / shard_names(num_shards)[shard]
            shutil.rmtree(directory, ignore_errors=True)  # a build cut short leaves no commit worth keeping
            running.append(run_child(_build_shard, (str(collection), str(directory), str(owners), shard,
                                                     num_shards, segment_docs)))
        for job in list(running):
            result = child_result(job, timeout=2)
            if result is not None:
                running.remove(job)
                results[result["shard"]] = result
                (done_dir / f"{result['shard']}.json").write_text(json.dumps(result))
                report(f"  shard {result['shard']} of {num_shards}: {result['docs']:,} docs, {result['seconds']:.0f} s "
                       f"(CPU {result['cpu_seconds']:.0f} s), peak RSS {result['peak_rss_mb']:.0f} MB")
    write_manifest(out, Manifest(tuple(shard_names(num_shards))))
    return [results[s] for s in range(num_shards)]


def read_queries(collection: Path, count: int):
    """The first ``count`` MS MARCO dev seed queries as (terms, weights) pairs."""
    indptr = np.load(collection / "queries" / "indptr.npy")
    indices = np.load(collection / "queries" / "indices.npy")
    values = np.load(collection / "queries" / "values.npy")
    source = np.load(collection / "queries" / "source.npy")
    chosen = np.flatnonzero(source == MSMARCO_DEV)[:count]
    return [(indices[indptr[q] : indptr[q + 1]], values[indptr[q] : indptr[q + 1]]) for q in chosen]


def _stats(ms: list[float]) -> dict:
    values = np.asarray(ms)
    return {"mean_ms": float(values.mean()), "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99))}


def _measure(out: str, collection: str, num_queries: int, queue) -> None:
    from lsr.index.shards import merge_top_k
    from lsr.index.sharded import ShardedIndex

    queries = read_queries(Path(collection), num_queries)
    baseline = status_mb("VmRSS")
    opened = time.perf_counter()
    index = ShardedIndex(out, writer="never")
    open_seconds = time.perf_counter() - opened
    for terms, weights in queries:  # warm the page cache and Numba's dispatch, untimed
        index.search_sparse(terms, weights, 10)
    result: dict = {"queries": len(queries), "open_seconds": open_seconds, "one_client": {}, "concurrent": {}}
    for k in KS:
        total, slowest, shard_ms = [], [], []
        load = OtherLoad()
        for terms, weights in queries:
            started = time.perf_counter()
            answers, times = [], []
            for live in index.shards:
                began = time.perf_counter()
                answers.append(live.search_sparse(terms, weights, k))
                times.append((time.perf_counter() - began) * 1e3)
            merge_top_k(answers, k)
            total.append((time.perf_counter() - started) * 1e3)
            slowest.append(max(times))
            shard_ms.extend(times)
        result["one_client"][str(k)] = {"total": _stats(total), "slowest_shard": _stats(slowest),
                                        "each_shard": _stats(shard_ms), "other_load": load.share()}
    for clients in CLIENTS:
        for k in KS:
            def one(query, k=k):
                began = time.perf_counter()
                index.search_sparse(query[0], query[1], k)
                return (time.perf_counter() - began) * 1e3

            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                latencies = list(pool.map(one, queries))
            wall = time.perf_counter() - started
            result["concurrent"][f"{clients}@{k}"] = {"clients": clients, "k": k, "qps": len(queries) / wall,
                                                      **_stats(latencies)}
    result.update(search_rss_mb=status_mb("VmRSS"), search_peak_rss_mb=status_mb("VmHWM"),
                  search_baseline_rss_mb=baseline)
    index.close()
    queue.put(result)


def measure(out: Path, collection: Path, num_queries: int) -> dict:
    return wait_child(run_child(_measure, (str(out), str(collection), num_queries)))


def run_shard_count(collection: Path, work: Path, num_shards: int, segment_docs: int, jobs: int, num_queries: int,
                    keep_index: bool) -> dict:
    from lsr.index.shards import shard_names

    out = work / f"index-{num_shards}"
    started = time.perf_counter()
    shards = build_shards(collection, out, work, num_shards, segment_docs, jobs)
    build_wall = time.perf_counter() - started
    sizes = [directory_mb(out / name) for name in shard_names(num_shards)]
    print(f"  measuring {num_shards} shard(s)", flush=True)
    search = measure(out, collection, num_queries)
    if not keep_index:
        shutil.rmtree(out)
    return {"shards": num_shards, "docs": sum(s["docs"] for s in shards), "build": shards,
            "build_wall_seconds_this_run": build_wall, "build_cpu_seconds": sum(s["cpu_seconds"] for s in shards),
            "index_mb": sum(sizes), "shard_index_mb": sizes, "search": search}


def markdown(report: dict) -> str:
    lines = [f"# MS MARCO-scale simulation: {report['docs']:,} grown documents as 1, 2, 4 and 8 shards",
             "", "Built and measured on this one machine (each shard count in turn; see `eval/bench_shards.py`). "
             "Build: each shard's own child process (segments of "
             f"{report['segment_docs']:,}, BP-reordered, merged), {report['jobs']} at a time; shard build time is "
             "the slowest shard's wall time, CPU is the sum over shards. Search: safe BMP, one thread per search, "
             f"the first {report['queries']} MS MARCO dev seed queries; `total` is one process searching every shard "
             "in turn and merging; `slowest shard` is the per-query maximum of the shards' own times (the fan-out's "
             "critical path when each shard has its own machine, network not included). QPS: client threads "
             "searching at once, all shards in one process on this machine's cores. Searcher RSS counts the index "
             "pages mapped and touched (opening verifies every checksum, so all of them).", "",
             "| shards | docs/shard | shard build s (slowest) | build CPU s (all) | index MB (all / largest shard) "
             "| build peak RSS MB (largest) | k=10 total mean/p50/p99 ms | k=10 slowest shard mean/p50/p99 ms "
             "| k=1000 total mean/p50/p99 ms | k=1000 slowest shard mean/p50/p99 ms | QPS 8 / 32 clients (k=10) "
             "| QPS 8 / 32 clients (k=1000) | searcher RSS MB (all shards / per shard) |",
             "|---" * 13 + "|"]

    def triple(stats):
        return f"{stats['mean_ms']:.2f} / {stats['p50_ms']:.2f} / {stats['p99_ms']:.2f}"

    for key in sorted(report["runs"], key=int):
        run = report["runs"][key]
        search, one = run["search"], run["search"]["one_client"]
        conc = search["concurrent"]
        lines.append(
            f"| {run['shards']} | {run['docs'] // run['shards']:,} | {max(s['seconds'] for s in run['build']):.0f} "
            f"| {run['build_cpu_seconds']:.0f} | {run['index_mb']:,.0f} / {max(run['shard_index_mb']):,.0f} "
            f"| {max(s['peak_rss_mb'] for s in run['build']):,.0f} | {triple(one['10']['total'])} "
            f"| {triple(one['10']['slowest_shard'])} | {triple(one['1000']['total'])} "
            f"| {triple(one['1000']['slowest_shard'])} | {conc['8@10']['qps']:.0f} / {conc['32@10']['qps']:.0f} "
            f"| {conc['8@1000']['qps']:.1f} / {conc['32@1000']['qps']:.1f} "
            f"| {search['search_rss_mb']:,.0f} / {search['search_rss_mb'] / run['shards']:,.0f} |")
    lines += ["", "Other processes' share of the CPUs while one client was timed (k = 10 / 1000; work beside a "
              "timing slows it): " + "; ".join(
                  f"{key} shard(s) " + (" / ".join(f"{one[k]['other_load']:.0%}" for k in ("10", "1000"))
                                        if "other_load" in (one := report["runs"][key]["search"]["one_client"])["10"]
                                        else "not recorded")
                  for key in sorted(report["runs"], key=int)) + "."]
    machine = report["machine"]
    lines += ["", f"Machine: {machine['platform']}, {machine['cpus']} CPUs  ", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--shards", type=int, nargs="+", default=[8, 4, 2, 1])
    parser.add_argument("--segment-docs", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2, help="shard builds at once")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lsr-bench-shards"))
    parser.add_argument("--keep-index", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.json; measure nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.with_suffix(".json").read_text())))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    json_path = args.out.with_suffix(".json")
    report = json.loads(json_path.read_text()) if json_path.exists() else {"runs": {}}
    report.update(collection=str(args.collection), docs=json.loads((args.collection / "meta.json").read_text())["docs"],
                  segment_docs=args.segment_docs, jobs=args.jobs, queries=args.queries, machine=machine_description(),
                  command=command_line("bench_shards.py", argv))
    for num_shards in args.shards:
        if str(num_shards) in report["runs"]:
            print(f"{num_shards} shard(s): done before, kept")
            continue
        print(f"{num_shards} shard(s): building", flush=True)
        report["runs"][str(num_shards)] = run_shard_count(args.collection, args.work, num_shards, args.segment_docs,
                                                          args.jobs, args.queries, args.keep_index)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))
        print(markdown(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
