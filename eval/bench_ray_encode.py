"""Indexing throughput through Ray against the one-process job, on the same corpus.

    python eval/bench_ray_encode.py --docs 2000 --out eval/results/bench_ray_encode

Both build a 2-shard index of the first ``--docs`` SciFact documents with the bundled SPLADE
model: the one-process `lsr index` job (encoding on this thread, segments finished on a
background thread) and the Ray Data job (a local Ray on this machine, started by the job:
its start-up is counted), ``--rounds`` times each, alternating which goes first. Reported:
documents per second of wall time for each, their ratio over all runs and round by round,
Ray's overhead split into start-up (Ray, actors, models) and the rest, and where the CPU went
(`eval.cpu_usage`: the machine's busy time, Ray's processes by role).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import time
from pathlib import Path

from lsr.eval.cpu_usage import ProcessCpuSampler, machine_busy_seconds, own_cpu_seconds
from lsr.eval.report import publish


def make_corpus(docs: int, out: Path) -> Path:
    from lsr.data.datasets import data_dir

    source = data_dir() / "beir" / "scifact" / "corpus.jsonl.gz"
    with gzip.open(source, "rt") as handle:
        lines = [next(handle) for _ in range(docs)]
    out.write_text("".join(lines))
    return out


def one_process(corpus: Path, out: Path, shards: int) -> dict:
    from lsr.data.loaders import iter_corpus
    from lsr.encoders.loading import load_encoder
    from lsr.indexing import index_corpus

    started, busy, cpu = time.perf_counter(), machine_busy_seconds(), own_cpu_seconds()
    encoder = load_encoder(None)
    index_corpus(iter_corpus(corpus), encoder, out, str(corpus), show_progress=False, shards=shards)
    return {"seconds": time.perf_counter() - started, "machine_busy_cpu_seconds": machine_busy_seconds() - busy,
            "process_cpu_seconds": own_cpu_seconds() - cpu}


def on_ray(corpus: Path, out: Path, shards: int, block_docs: int | None, actors: int | None,
           cpus_per_actor: int) -> dict:
    from lsr.index.writer import index_settings
    from lsr.data.blocks import CorpusBlocks
    from lsr.encoders.loading import load_encoder
    from lsr.scaleout.block_indexer import EncoderSpec
    from lsr.scaleout.ray_indexing import ray_index, while_ray_starts

    started, busy, sampler = time.perf_counter(), machine_busy_seconds(), ProcessCpuSampler().start()
    encoder = while_ray_starts(None, lambda: load_encoder(None))  # as `lsr index --ray` does
    settings = index_settings(encoder.vocab_size, {"encoder": encoder.describe(), "corpus": str(corpus)}, None,
                              reorder="bp", store_texts=True)
    marks = []
    source = CorpusBlocks.open(str(corpus), block_docs)
    done = ray_index(source, out, shards, settings, EncoderSpec(None),
                     actors=actors, cpus_per_actor=cpus_per_actor,
                     report=lambda line: marks.append((time.perf_counter(), line)))
    seconds = time.perf_counter() - started
    first_block = next(t for t, line in marks if line.startswith("blocks done 1 "))
    busy, processes = machine_busy_seconds() - busy, sampler.stop()
    busiest = sampler.busiest(4)
    import ray

    ray.shutdown()
    return {"seconds": seconds, "until_first_block": first_block - started, "block_docs": source.block_docs,
            "machine_busy_cpu_seconds": busy, "cpu_seconds_by_process": processes,
            "busiest_processes": busiest, **done}


def run(docs: int, shards: int, block_docs: int | None, actors: int | None, cpus_per_actor: int, work: Path,
        rounds: int) -> dict:
    """``rounds`` of both jobs, alternating which goes first (one, Ray, Ray, one, ...): this
    machine's speed drifts by a third or more within minutes, and a ratio of one run each would
    measure that drift."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = make_corpus(docs, work / "corpus.jsonl")
    singles, distributed = [], []
    for round_ in range(rounds):
        for job in ("one", "ray") if round_ % 2 == 0 else ("ray", "one"):
            shutil.rmtree(work / job, ignore_errors=True)  # the last Ray index stays for bench_ray_serve
            if job == "one":
                singles.append(one_process(corpus, work / job, shards))
                print(f"one process: {singles[-1]}", flush=True)
            else:
                distributed.append(on_ray(corpus, work / job, shards, block_docs, actors, cpus_per_actor))
                print(f"ray: {distributed[-1]}", flush=True)
    one_seconds = sum(r["seconds"] for r in singles)
    ray_seconds = sum(r["seconds"] for r in distributed)
    return {"docs": docs, "shards": shards, "block_docs": distributed[-1]["block_docs"],
            "cpus_per_actor": cpus_per_actor, "rounds": rounds,
            "one_process": {**singles[-1], "runs_seconds": [r["seconds"] for r in singles],
                            "docs_per_second": docs * rounds / one_seconds},
            "ray": {**distributed[-1], "runs_seconds": [r["seconds"] for r in distributed],
                    "docs_per_second": docs * rounds / ray_seconds},
            "round_ratios": [one["seconds"] / ray["seconds"] for one, ray in zip(singles, distributed)],
            "ratio": one_seconds / ray_seconds}


def markdown(report: dict) -> str:
    one, ray = report["one_process"], report["ray"]
    rounds = report.get("rounds", 1)

    def runs(job: dict) -> str:
        return " / ".join(f"{seconds:.1f}" for seconds in job.get("runs_seconds", [job["seconds"]]))

    return "\n".join([
        "# Indexing throughput: Ray Data job against the one-process job", "",
        f"The first {report['docs']:,} SciFact documents, bundled SPLADE model, {report['shards']} shards, "
        f"documents per second of wall time (model loading and, for Ray, its start-up included); {rounds} "
        "round(s) of both jobs, alternating which goes first.", "",
        "| job | seconds (each run) | docs/s (all runs) |", "|---|---|---|",
        f"| one process (`lsr index`) | {runs(one)} | {one['docs_per_second']:.2f} |",
        f"| Ray Data, {ray['actors']} actors x {report['cpus_per_actor']} CPU, blocks of {report['block_docs']} "
        f"(`lsr index --ray`) | {runs(ray)} | {ray['docs_per_second']:.2f} |", "",
        f"Ray / one process: **{report['ratio']:.3f}x** over all runs (target at least 0.9x)"
        + (f"; round by round {', '.join(f'{r:.3f}' for r in report['round_ratios'])}." if "round_ratios" in report
           else "."), "",
        f"Ray's share (last run): {ray['until_first_block']:.1f} s from the job's start to its first block published "
        f"(Ray started, actors and their models loaded, one block encoded); encoding took "
        f"{ray['encode_seconds']:.1f} actor-seconds, segment building {ray['build_seconds']:.1f}.", "",
        *_cpu_lines(report),
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs  ",
        f"Command: `{report['command']}`", ""])


def _cpu_lines(report: dict) -> list[str]:
    """Where the CPU went in each job's last run (results recorded before these figures existed
    have none)."""
    one, ray, cpus = report["one_process"], report["ray"], report["machine"]["cpus"]
    if "machine_busy_cpu_seconds" not in ray:
        return []
    by_process = ", ".join(f"{kind} {seconds:.1f}" for kind, seconds in sorted(
        ray["cpu_seconds_by_process"].items(), key=lambda item: -item[1]))
    return [f"CPU-seconds, machine-wide busy time against wall x {cpus} CPUs (last runs): one process "
            f"{one['machine_busy_cpu_seconds']:.1f} of {one['seconds'] * cpus:.1f} (its own "
            f"{one['process_cpu_seconds']:.1f}); Ray {ray['machine_busy_cpu_seconds']:.1f} of "
            f"{ray['seconds'] * cpus:.1f}, by process: {by_process}.", "",
            *([f"Busiest processes of the Ray run: "
               + "; ".join(f"`{name[:60]}` {seconds:.1f}" for name, seconds in ray["busiest_processes"]) + ".", ""]
              if ray.get("busiest_processes") else [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--block-docs", type=int, help="default: lsr index --ray's (from the corpus size)")
    parser.add_argument("--actors", type=int)
    parser.add_argument("--cpus-per-actor", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lsr-bench-ray-encode"))
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both jobs (alternating which goes first)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    report = run(args.docs, args.shards, args.block_docs, args.actors, args.cpus_per_actor, args.work, args.rounds)
    publish(report, markdown, "bench_ray_encode.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
