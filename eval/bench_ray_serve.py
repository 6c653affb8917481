"""What sharded search on Ray Serve adds over the one-process service, for the same index.

    python eval/bench_ray_serve.py INDEX_DIR [--dataset beir/scifact/test] [--rounds 3] \
        --out eval/results/bench_ray_serve_scifact

Both serve INDEX_DIR (a sharded index, or one index as a single shard) over HTTP on loopback:
`lsr serve` (uvicorn, one worker, every shard searched in its process) and `lsr serve --ray`
(a local Ray: the FastAPI ingress, the encoder deployment, one deployment per shard). One
client sends the judged queries one at a time on a keep-alive connection; rounds alternate
between the two servers (both stay up) so drift hits both alike. Reported: latency of each
and the difference of their medians.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from eval.bench_service import http_ms, summary
from eval.report import machine_description, save_result
from eval.server_process import ServerProcess


def run(index_dir: Path, dataset: str, rounds: int, k: int, mode: str, replicas: int, log_dir: Path) -> dict:
    from lsr.data.datasets import resolve_dataset
    from index.shards import is_sharded, read_manifest

    data = resolve_dataset(dataset)
    judged = data.qrels()
    queries = [text for qid, text in data.queries().items() if qid in judged]
    shards = read_manifest(index_dir).num_shards if is_sharded(index_dir) else 1
    log_dir.mkdir(parents=True, exist_ok=True)
    single, on_ray = [], []
    with ServerProcess(index_dir, log_path=log_dir / "one-process.log") as one, \
            ServerProcess(index_dir, log_path=log_dir / "ray.log", ray_replicas=replicas) as ray:
        for url in (one.url, ray.url):
            http_ms(url, queries[:20], k, mode)  # warm: connections, caches, lazy loads
        for _ in range(rounds):
            single.append(http_ms(one.url, queries, k, mode)[0])
            on_ray.append(http_ms(ray.url, queries, k, mode)[0])
    single, on_ray = np.concatenate(single), np.concatenate(on_ray)
    result = {"one_process": summary(single), "ray_serve": summary(on_ray)}
    result["overhead_p50_ms"] = result["ray_serve"]["p50_ms"] - result["one_process"]["p50_ms"]
    result.update(dataset=dataset, queries=len(queries), rounds=rounds, k=k, mode=mode, shards=shards,
                  replicas=replicas, index_dir=str(index_dir), target_overhead_p50_ms=2.0,
                  met=result["overhead_p50_ms"] <= 2.0)
    return result


def markdown(result: dict) -> str:
    rows = [("`lsr serve` (one process)", result["one_process"]),
            (f"`lsr serve --ray` ({result['shards']} shard(s) x {result['replicas']} replica(s))", result["ray_serve"])]
    lines = [f"# Sharded search on Ray Serve against the one-process service ({result['dataset']}, "
             f"{result['queries']} queries x {result['rounds']} rounds, k={result['k']}, mode {result['mode']})", "",
             "Same index directory, both over HTTP on loopback, one client, one query at a time.", "",
             "| server | p50 ms | p90 ms | p99 ms | mean ms |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {s['p50_ms']:.3f} | {s['p90_ms']:.3f} | {s['p99_ms']:.3f} | {s['mean_ms']:.3f} |"
              for name, s in rows]
    lines += ["", f"Ray Serve adds **{result['overhead_p50_ms']:.3f} ms** at p50 (target at most 2 ms: "
                  f"{'met' if result['met'] else 'NOT met'}).", "",
              f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs  ",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--dataset", default="beir/scifact/test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--mode", default="sparse", choices=["sparse", "dense", "hybrid"])
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--logs", type=Path, default=Path("/tmp/lsr-bench-ray-serve"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args.index, args.dataset, args.rounds, args.k, args.mode, args.replicas, args.logs)
    result.update(machine=machine_description(),
                  command="python eval/bench_ray_serve.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    print(markdown(result))
    if args.out:
        save_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
