"""What a reader's refresh costs when the log grew: the per-search price of seeing every write.

    python eval/bench_refresh.py /tmp/lsr-bench-segments/one /tmp/bench-1m --out eval/results/bench_refresh_1m

A copy of an index (hard links) is opened twice in one process, as two service workers would
open it: a writer appends documents of the collection under new ids (batches of 1, 4 and 16
records, each batch one log write and one fsync; flushing off, so the buffer grows to the
number of records written, as between two flushes), and after each batch a reader refreshes:
it reads the new records from the log into its write buffer and builds the view that its
next search would read. Timed: that refresh; the view's kernel data, which that search builds
first when the segments' live masks changed (reused otherwise); and a second refresh right
after, which finds nothing new (what every search pays when nobody writes). With
``--replace`` every record replaces a document of the index (the collection's ids ``d0``,
``d1``, ...), so each refresh also hides a segment document. ``--flushed-segments N`` first
flushes N segments of 1,000 other documents of the collection into the copy (the young
segments an index beside writes holds), timing the reader's refresh that loads each flush's
commit (it opens and checks the new segment and drops the flushed records from its buffer)
and the kernel data built after it. No search runs in between, so the figures are a warm
cache's; beside a search they grow (``eval/bench_writes.py`` measures the refresh inside a
searching process while another writes).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from lsr.eval.bench_collection import document_vectors, link_copy
from lsr.eval.report import publish
from lsr.index.live import LiveIndex

BATCHES = (1, 4, 16)
FLUSHED_DOCS = 1000


def run(index: Path, collection: Path, work: Path, records: int, replace: bool, flushed_segments: int = 0) -> dict:
    copy = work / "index"
    shutil.rmtree(work, ignore_errors=True)
    link_copy(index, copy)
    flushed = FLUSHED_DOCS * flushed_segments
    vectors = document_vectors(collection, records * len(BATCHES) + 100 + flushed)
    with LiveIndex(index, writer="never") as opened:
        num_docs = opened.num_docs
    # Replaced documents: distinct ids of the collection (its documents are named d0, d1, ...).
    replaced = np.random.default_rng(1).choice(num_docs, size=records * len(BATCHES), replace=False)
    name = (lambda i: f"d{replaced[i]}") if replace else (lambda i: f"new-{i}")
    rows = {}
    with LiveIndex(copy, writer="required") as writer, LiveIndex(copy, writer="never") as reader:
        writer.flush_policy.max_docs, writer.flush_policy.max_seconds = 10 ** 9, 1e9  # no flush: one buffer
        loads = []  # (refresh that loads the flush's commit, the kernel data after it), us
        for segment in range(flushed_segments):
            first = len(vectors) - flushed + segment * FLUSHED_DOCS
            writer.add_many([(f"flushed-{segment}-{i}", "", "", *vectors[first + i], None)
                             for i in range(FLUSHED_DOCS)])
            reader.refresh()  # the records, as a reader beside the writer holds them
            writer.flush()
            began = time.perf_counter()
            view = reader.refresh()  # the new segment opened and checked, the buffer dropped
            loaded = time.perf_counter()
            view.kernel_groups()
            loads.append(((loaded - began) * 1e6, (time.perf_counter() - loaded) * 1e6))
        for i in range(100):  # warm up: compiled kernels, page cache
            writer.add(f"warm-{i}", "", "", *vectors[i])
            reader.refresh()
        taken = 100
        for batch in BATCHES:
            grown, kernel, quiet = [], [], []
            for start in range(0, records, batch):
                writer.add_many([(name(taken - 100 + j), "", "", *vectors[taken + j], None) for j in range(batch)])
                taken += batch
                began = time.perf_counter()
                view = reader.refresh()
                refreshed = time.perf_counter()
                view.kernel_groups()
                middle = time.perf_counter()
                reader.refresh()
                grown.append((refreshed - began) * 1e6)
                kernel.append((middle - refreshed) * 1e6)
                quiet.append((time.perf_counter() - middle) * 1e6)
            rows[str(batch)] = {"refreshes": len(grown), "p50_us": float(np.percentile(grown, 50)),
                                "mean_us": float(np.mean(grown)), "p99_us": float(np.percentile(grown, 99)),
                                "nothing_new_p50_us": float(np.percentile(quiet, 50)),
                                "kernel_data_p50_us": float(np.percentile(kernel, 50)),
                                "kernel_data_mean_us": float(np.mean(kernel)),
                                "per_record_mean_us": float(np.mean(grown)) / batch}
            print(f"batch {batch}: {rows[str(batch)]}", flush=True)
        view = reader.refresh()
        buffered, segments = view.buffer.num_live, len(view.segments)
    shutil.rmtree(work, ignore_errors=True)
    # The first load also compiles the typed list of several segments' kernel data.
    commit_loads = {"loads": len(loads), "first_us": loads[0], "p50_us": np.percentile(loads[1:], 50, axis=0).tolist(),
                    "mean_us": np.mean(loads[1:], axis=0).tolist()} if len(loads) > 1 else None
    return {"batches": rows, "records_per_batch_size": records, "buffered_at_end": buffered, "replace": replace,
            "docs": num_docs + flushed, "segments": segments, "commit_loads": commit_loads}


def markdown(report: dict) -> str:
    lines = ["# A reader's refresh after the log grew (one process, warm cache)", "",
             f"Index of {report['docs']:,} documents in {report['segments']} segment(s); per batch size, "
             f"{report['records_per_batch_size']} records "
             + ("replacing documents of the index, " if report["replace"] else "of new documents, ")
             + "appended in batches (one fsync each), the reader refreshing after each "
             f"({report['buffered_at_end']:,} documents buffered at the end). Microseconds.", "",
             "| records per batch | refresh p50 | mean | p99 | mean per record | kernel data p50 / mean | "
             "nothing new, p50 |", "|---|---|---|---|---|---|---|"]
    for batch, row in report["batches"].items():
        lines.append(f"| {batch} | {row['p50_us']:.1f} | {row['mean_us']:.1f} | {row['p99_us']:.1f} | "
                     f"{row['per_record_mean_us']:.1f} | {row['kernel_data_p50_us']:.1f} / "
                     f"{row['kernel_data_mean_us']:.1f} | {row['nothing_new_p50_us']:.1f} |")
    if loads := report.get("commit_loads"):
        lines += ["", f"Loading a flush's commit ({loads['loads']} flushes of 1,000 documents, the reader holding "
                  "their records; after the first, which also compiles): the refresh p50 "
                  f"{loads['p50_us'][0]:,.0f} us (mean {loads['mean_us'][0]:,.0f}), then the kernel data p50 "
                  f"{loads['p50_us'][1]:,.0f} us (mean {loads['mean_us'][1]:,.0f}); the first "
                  f"{loads['first_us'][0]:,.0f} and {loads['first_us'][1]:,.0f} us."]
    lines += ["", f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs  ",
              f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path, help="an index of the collection (copied by hard links)")
    parser.add_argument("collection", type=Path)
    parser.add_argument("--records", type=int, default=1600, help="records written per batch size")
    parser.add_argument("--replace", action="store_true", help="each record replaces a document of the index")
    parser.add_argument("--flushed-segments", type=int, default=0,
                        help="segments of 1,000 other documents flushed into the copy first")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lsr-bench-refresh"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(args.index, args.collection, args.work, args.records, args.replace, args.flushed_segments)
    publish(report, markdown, "bench_refresh.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
