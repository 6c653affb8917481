"""What sharded search on Ray Serve adds over the one-process service, for the same index.

    python eval/bench_ray_serve.py INDEX_DIR [--dataset beir/scifact/test] [--rounds 3] \
        --out eval/results/bench_ray_serve_scifact

Both serve INDEX_DIR (a sharded index, or one index as a single shard) over HTTP on loopback:
`lsr serve` (uvicorn, one worker, every shard searched in its process) and `lsr serve --ray`
(a local Ray: the FastAPI ingress, the encoder deployment, one deployment per shard). One
client sends the judged queries one at a time on a keep-alive connection; rounds alternate
between the two servers (both stay up) so drift hits both alike. Reported: latency of each
and the difference of their medians.

Then, on a fresh local Ray (two CPUs) with nothing else deployed, what one hop costs: a plain
Ray actor call and a Serve deployment-handle call (sync and async methods over Serve's
default actor calls, and over its inter-deployment gRPC, which `lsr serve --ray` uses), each
a round trip of a tiny argument, median of ``--hop-calls`` (the probes take turns call by
call). A sparse search on Serve makes three hops one after the other (the proxy to the
ingress, the ingress to the encoder, the ingress to every shard at once; the hits' documents
come back with them), so three gRPC hops are the floor of what Serve adds on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from lsr.eval.bench_service import http_ms, summary
from lsr.eval.report import publish
from lsr.eval.server_process import ServerProcess


def run(index_dir: Path, dataset: str, rounds: int, k: int, mode: str, replicas: int, log_dir: Path) -> dict:
    from lsr.data.datasets import resolve_dataset
    from lsr.index.shards import is_sharded, read_manifest

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


def hop_costs(calls: int) -> dict:
    """Median round trip (ms) of a Ray actor call and of Serve handle calls, on a fresh local Ray."""
    import ray
    from ray import serve

    @ray.remote(num_cpus=0)
    class Echo:
        def echo(self, x):
            return x

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class EchoDeployment:
        def echo(self, x):
            return x

        async def echo_async(self, x):
            return x

    def median_ms(probes: dict) -> dict:
        """Each probe's median, the probes taking turns call by call (drift hits all alike)."""
        for call in probes.values():
            for _ in range(20):
                call()
        times = {name: [] for name in probes}
        for _ in range(calls):
            for name, call in probes.items():
                started = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - started) * 1e3)
        return {name: float(np.median(values)) for name, values in times.items()}

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        actor = Echo.remote()
        handle = serve.run(EchoDeployment.bind(), name="hop-probe", route_prefix=None)
        by_value = handle.options(_by_reference=False)  # over gRPC, as service.ray_serve's handles
        return {**median_ms({"ray_actor_call_ms": lambda: ray.get(actor.echo.remote(1)),
                             "serve_handle_call_ms": lambda: handle.echo.remote(1).result(),
                             "serve_handle_async_call_ms": lambda: handle.echo_async.remote(1).result(),
                             "serve_grpc_call_ms": lambda: by_value.echo.remote(1).result()}),
                "calls": calls}
    finally:
        serve.shutdown()
        ray.shutdown()


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
                  f"{'met' if result['met'] else 'NOT met'}).", ""]
    hops = result.get("hops")
    if hops:
        lines += [f"One hop on this machine (a fresh local Ray, median of {hops['calls']} round trips): a Ray actor "
                  f"call {hops['ray_actor_call_ms']:.2f} ms; a Serve handle call {hops['serve_handle_call_ms']:.2f} ms "
                  f"(async method {hops['serve_handle_async_call_ms']:.2f} ms)"
                  + (f"; over Serve's gRPC, as `lsr serve --ray` calls, {hops['serve_grpc_call_ms']:.2f} ms. "
                     if "serve_grpc_call_ms" in hops else ". ")
                  + "A sparse search crosses three Serve hops in turn (proxy to ingress, ingress to encoder, ingress "
                  f"to the shards), so about {3 * hops.get('serve_grpc_call_ms', hops['serve_handle_call_ms']):.1f} ms "
                  "is Serve's floor here.", ""]
    lines += [
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
    parser.add_argument("--hop-calls", type=int, default=300, help="round trips per hop probe (0: no probe)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args.index, args.dataset, args.rounds, args.k, args.mode, args.replicas, args.logs)
    if args.hop_calls:
        result["hops"] = hop_costs(args.hop_calls)
    publish(result, markdown, "bench_ray_serve.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
