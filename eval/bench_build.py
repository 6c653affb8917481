"""Build time and peak memory of an index of a grown collection, segment by segment.

    python eval/bench_build.py /tmp/bench-4m --segment-docs 250000 --out eval/results/bench_build_4m

The collection (``../shared/tools/make_bench_corpus.py``) is read in chunks with plain reads
(no memory map, so the input does not count as the builder's memory) and indexed as
``lsr index`` does: one segment per ``--segment-docs`` documents, each finished on a
background thread while the next chunk is read, then merged into one segment keeping each
segment's document order (``--segments keep`` skips the merge). The build runs in a child
process; its peak resident set (``VmHWM`` of ``/proc/self/status``, file pages it maps
included) is reported with its baseline before the build.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from lsr.eval.report import machine_description
from lsr.index.npy_stream import NpyReader
from lsr.index.sparse_batch import SparseBatch

VOCAB_SIZE = 30522
READ_DOCS = 50_000


def read_chunks(collection: Path, limit: int | None):
    """``(ids, SparseBatch, None)`` chunks of the collection's documents, read with plain reads."""
    indptr = np.load(collection / "docs" / "indptr.npy")
    indices, values = NpyReader(collection / "docs" / "indices.npy"), NpyReader(collection / "docs" / "values.npy")
    total = len(indptr) - 1 if limit is None else min(limit, len(indptr) - 1)
    for start in range(0, total, READ_DOCS):
        end = min(start + READ_DOCS, total)
        a, b = int(indptr[start]), int(indptr[end])
        yield ([f"d{i}" for i in range(start, end)],
               SparseBatch(indptr[start : end + 1] - a, indices.read(a, b), values.read(a, b), VOCAB_SIZE), None)


def status_mb(field: str = "VmHWM") -> float:
    """A memory figure of this process from /proc/self/status (VmHWM: peak resident set), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(target, args: tuple):
    """Start ``target(*args, queue)`` in a spawned process; the handle for `child_result`."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=target, args=(*args, queue))
    child.start()
    return child, queue


def child_result(job, timeout: float = 5):
    """The child's answer (None while it runs); raises when it died without one (out of memory)."""
    child, queue = job
    try:
        result = queue.get(timeout=timeout)
    except Exception:
        if not child.is_alive():
            raise RuntimeError(f"a benchmark child died (exit code {child.exitcode})") from None
        return None
    child.join()
    return result


def wait_child(job):
    """The child's answer once it gives one; raises when it dies without (`child_result`)."""
    while (result := child_result(job)) is None:
        pass
    return result


def directory_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file()) / 2**20


def _build(collection: str, out: str, limit: int | None, segment_docs: int, merge: bool, queue) -> None:
    from lsr.index.build import IndexBuild

    baseline = status_mb()
    started = time.perf_counter()
    build = IndexBuild(out, VOCAB_SIZE, {"corpus": collection}, segment_docs=segment_docs, merge=merge,
                       background=True, reorder="bp", block_size=8)
    for ids, batch, titles in read_chunks(Path(collection), limit):
        build.add(ids, batch, titles)
    segments_built = time.perf_counter() - started
    build.finish()
    queue.put({"seconds": time.perf_counter() - started, "segments_built_seconds": segments_built,
               "peak_rss_mb": status_mb(), "baseline_rss_mb": baseline})


def measure(collection: Path, out: Path, limit: int | None, segment_docs: int, merge: bool) -> dict:
    if out.exists():
        shutil.rmtree(out)
    result = wait_child(run_child(_build, (str(collection), str(out), limit, segment_docs, merge)))
    from lsr.index.commit import read_newest_commit

    commit = read_newest_commit(out)
    return {**result, "docs": commit.num_docs, "segments": len(commit.segments), "index_mb": directory_mb(out / "segments"),
            "segment_docs": segment_docs, "merged": merge}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--docs", type=int, help="the first N documents (default: all)")
    parser.add_argument("--segment-docs", type=int, default=1_000_000)
    parser.add_argument("--segments", choices=["merge", "keep"], default="merge")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lsr-bench-build"))
    parser.add_argument("--keep-index", action="store_true", help="leave the index in --work")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    index_dir = args.work / f"{args.collection.name}-{args.segment_docs}-{args.segments}"
    result = measure(args.collection, index_dir, args.docs, args.segment_docs, args.segments == "merge")
    report = {**result, "collection": str(args.collection), "machine": machine_description(),
              "command": "python eval/bench_build.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
    if not args.keep_index:
        shutil.rmtree(index_dir, ignore_errors=True)
    text = (f"{report['docs']} docs in {report['segments']} segment(s) (segments of {args.segment_docs}, "
            f"{'merged' if report['merged'] else 'kept'}): {report['seconds']:.0f} s, peak RSS "
            f"{report['peak_rss_mb']:.0f} MB (baseline {report['baseline_rss_mb']:.0f} MB), "
            f"index {report['index_mb']:.0f} MB")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(
            f"# Index build: time and peak memory\n\n{text}\n\nMeasured in a child process: VmHWM (peak resident "
            f"set, file pages it maps included).\n\nMachine: {report['machine']['platform']}, "
            f"{report['machine']['cpus']} CPUs  \nCommand: `{report['command']}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
