"""Project a sharded deployment (machines, memory per machine, expected p99) from measured figures.

    python eval/cost_model.py eval/results/bench_shards_8m8.json \\
        --encode eval/results/bench_ray_encode_scifact.json --serve eval/results/bench_ray_serve_scifact.json \\
        --docs 8800000 100000000 --out eval/results/cost_model

Inputs, all measured on this machine and read from the benchmarks' JSON:
- ``bench_shards.py``: index bytes per document, build CPU seconds per document, and search
  latency of one shard (mean and p99 of the slowest shard per query, k = 10 and k = 1000) at
  each measured shard size (the collection's documents / 1, 2, 4, 8);
- ``bench_ray_encode.py`` (optional): documents encoded per second per one-CPU encoder actor;
- ``bench_ray_serve.py`` (optional): what Ray Serve adds to a search at p50 (the fan-out's hops).

The model (every projected figure says so):
- latency grows with a shard's documents as a power law fitted (least squares in log-log) to the
  measured points (one measured size: assumed proportional); the shard count is the smallest
  power of two whose shards keep the projected p99 at k = 10 within ``--p99-ms`` (search
  compute; the Serve overhead is printed beside it);
- a query takes one core on every shard for the shard's mean time, scaled by the concurrency
  efficiency measured here (QPS with 8 clients over cores x 1000 / mean ms);
- machines: enough memory to keep the index resident (``--fill`` of each machine's memory) and
  enough cores for ``--target-qps``; a machine holds several shards where memory allows, and
  the index is copied as often as the machines added for QPS have room for;
- building takes the measured CPU seconds a document for the index and the measured encoding
  rate for the model, spread over every core of the deployment's machines.
Shard sizes outside the measured ones are extrapolations of the fit, and the slowest of many
shards is slower than the slowest of 8: the projected p99 is a lower bound there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from lsr.eval.report import publish


def power_fit(sizes: list[float], values: list[float]) -> tuple[float, float]:
    """(a, b) of value = a * size^b by least squares over the logs (one point: b = 1). A fit
    falling with size (b < 0) is taken as flat (b = 0, a the geometric mean): a larger shard
    is never projected faster than a smaller one."""
    x, y = np.log(np.asarray(sizes, dtype=float)), np.log(np.asarray(values, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        return float(np.exp(y.mean() - x.mean())), 1.0
    b, log_a = np.polyfit(x, y, 1)
    if b < 0:
        return float(np.exp(y.mean())), 0.0
    return float(np.exp(log_a)), float(b)


def linear_fit(sizes: list[float], values: list[float]) -> tuple[float, float]:
    """(a, b) of value = a + b * size by least squares (one point: a = 0)."""
    if len(sizes) < 2 or np.ptp(sizes) == 0:
        return 0.0, float(np.mean(values) / np.mean(sizes))
    b, a = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(values, dtype=float), 1)
    return float(a), float(b)


def measured_inputs(shards: dict, encode: dict | None, serve: dict | None,
                    shard_counts: list[int] | None = None) -> dict:
    """The model's inputs from the benchmarks' JSON; ``shard_counts``: the measured shard
    counts to use (default all), e.g. to leave out one timed beside other work."""
    keys = sorted(shards["runs"], key=int)
    if shard_counts is not None:
        missing = sorted(set(shard_counts) - {int(key) for key in keys})
        if missing:
            raise ValueError(f"shard counts {missing} are not in the bench_shards JSON (it has {keys})")
        keys = [key for key in keys if int(key) in shard_counts]
    runs = [shards["runs"][key] for key in keys]
    if not runs:
        raise ValueError("the bench_shards JSON holds no measured shard count")
    sizes = [run["docs"] / run["shards"] for run in runs]
    one = {k: [run["search"]["one_client"][k] for run in runs] for k in ("10", "1000")}
    efficiency = []
    for run in runs:  # measured QPS with 8 clients against what the cores would give at the mean time
        total_mean = run["search"]["one_client"]["10"]["total"]["mean_ms"]
        ideal = shards["machine"]["cpus"] * 1000 / total_mean
        efficiency.append(run["search"]["concurrent"]["8@10"]["qps"] / ideal)
    return {
        "shard_sizes": sizes,
        "bytes_per_doc": float(np.mean([run["index_mb"] * 2**20 / run["docs"] for run in runs])),
        "build_cpu_seconds_per_doc": float(np.mean([run["build_cpu_seconds"] / run["docs"] for run in runs])),
        "build_peak_rss_mb": linear_fit(sizes, [max(b["peak_rss_mb"] for b in run["build"]) for run in runs]),
        "shard_counts": [run["shards"] for run in runs],
        "fits": {f"{stat}@{k}": power_fit(sizes, [s["slowest_shard"][stat] for s in one[k]])
                 for k in ("10", "1000") for stat in ("mean_ms", "p99_ms")},
        # what a query costs each shard (the mean of every shard's own time, not the slowest's)
        "each_shard_fit": power_fit(sizes, [s["each_shard"]["mean_ms"] for s in one["10"]]),
        "concurrency_efficiency": float(np.mean(efficiency)),
        "encode_docs_per_second_per_cpu": (encode["ray"]["docs_per_second"] / (encode["ray"]["actors"]
                                           * encode["cpus_per_actor"]) if encode else None),
        "serve_overhead_p50_ms": serve["overhead_p50_ms"] if serve else None,
    }


def project(docs: int, inputs: dict, memory_gb: float, fill: float, cpus: int, target_qps: float,
            p99_ms: float) -> dict:
    def at(name: str, size: float) -> float:
        a, b = inputs["fits"][name]
        return a * size**b

    index_gb = docs * inputs["bytes_per_doc"] / 2**30
    shards = 1  # the fewest (a power of two) whose shard keeps the p99 and fits one machine's memory
    while docs / shards > 1000 and (at("p99_ms@10", docs / shards) > p99_ms
                                    or index_gb / shards > memory_gb * fill):
        shards *= 2
    size = docs / shards
    # A query takes one core on every shard for that shard's own mean time; a machine holds as
    # many shards (of any copies) as its memory allows, and its cores serve them all.
    a, b = inputs["each_shard_fit"]
    core_seconds_per_query = shards * a * size**b / 1000 / inputs["concurrency_efficiency"]
    for_memory = max(1, math.ceil(index_gb / (memory_gb * fill)))
    for_cpu = max(1, math.ceil(target_qps * core_seconds_per_query / cpus))
    machines = max(for_memory, for_cpu)
    copies = max(1, math.floor(machines * memory_gb * fill / index_gb)) if for_cpu > for_memory else 1
    build_cpu_hours = docs * inputs["build_cpu_seconds_per_doc"] / 3600
    encode_cpu_hours = (docs / inputs["encode_docs_per_second_per_cpu"] / 3600
                        if inputs["encode_docs_per_second_per_cpu"] else None)
    largest = max(inputs["shard_sizes"])
    return {
        "docs": docs, "index_gb": index_gb, "shards": shards, "docs_per_shard": size, "copies": copies,
        "machines": machines, "machines_for_memory": for_memory, "machines_for_qps": for_cpu,
        "memory_per_machine_gb": index_gb * copies / machines / fill,
        "build_peak_memory_gb": (inputs["build_peak_rss_mb"][0] + size * inputs["build_peak_rss_mb"][1]) / 1024,
        "mean_ms@10": at("mean_ms@10", size), "p99_ms@10": at("p99_ms@10", size),
        "mean_ms@1000": at("mean_ms@1000", size), "p99_ms@1000": at("p99_ms@1000", size),
        "qps_capacity@10": machines * cpus / core_seconds_per_query,
        "build_cpu_hours": build_cpu_hours, "encode_cpu_hours": encode_cpu_hours,
        "build_wall_hours": (build_cpu_hours + (encode_cpu_hours or 0)) / (machines * cpus),
        "extrapolated": size > largest * 1.01 or size < min(inputs["shard_sizes"]) * 0.99,
    }


def markdown(report: dict) -> str:
    inputs, params = report["inputs"], report["parameters"]
    sizes = ", ".join(f"{s:,.0f}" for s in inputs["shard_sizes"])
    lines = [
        "# Cost model: sharded deployments projected from this machine's measurements", "",
        "**Measured** here (inputs): index "
        f"{inputs['bytes_per_doc']:,.0f} bytes a document; build {inputs['build_cpu_seconds_per_doc'] * 1e3:.3f} "
        f"CPU ms a document; build peak memory {inputs['build_peak_rss_mb'][0]:,.0f} MB + "
        f"{inputs['build_peak_rss_mb'][1] * 1024:,.2f} KB a document of the shard; concurrency efficiency "
        f"{inputs['concurrency_efficiency']:.2f} (QPS with 8 clients "
        "over cores x 1000 / mean ms); "
        + (f"latency fitted as a x docs^b over shard sizes of {sizes} documents (shard counts "
           f"{', '.join(map(str, inputs['shard_counts']))}), a query's slowest shard: "
           + "; ".join(f"{name} b = {b:.2f}" for name, (a, b) in inputs["fits"].items())
           + f"; each shard's own mean at k = 10 (the compute a query costs): b = {inputs['each_shard_fit'][1]:.2f}"
           + (" (b = 0: the measured latency does not grow with shard size, taken as flat)"
              if any(b == 0 for _, b in [*inputs["fits"].values(), inputs["each_shard_fit"]]) else "")
           if len(inputs["shard_sizes"]) > 1 else
           f"slowest-shard latency measured at one shard size ({sizes} documents) and *assumed* proportional "
           "to a shard's documents (b = 1; more shard counts measured replace the assumption by a fit)")
        + (f"; encoding {inputs['encode_docs_per_second_per_cpu']:.1f} documents a second a CPU (SciFact "
           "documents, one-CPU Ray actors)" if inputs["encode_docs_per_second_per_cpu"] else "")
        + (f"; Ray Serve adds {inputs['serve_overhead_p50_ms']:.1f} ms at p50 (SciFact, 2 shards)"
           if inputs["serve_overhead_p50_ms"] is not None else "") + ".", "",
        f"**Projected** (parameters: machines of {params['memory_gb']:g} GB and {params['cpus']} CPUs, an index "
        f"may fill {params['fill']:.0%} of memory, p99 at k = 10 within {params['p99_ms']:g} ms (search "
        f"compute), {params['target_qps']:g} queries a second at k = 10):", "",
        "| docs | index GB | shards (docs each) | copies | machines (for memory / for QPS) | memory per machine GB "
        "| build peak GB per shard | mean / p99 k=10 ms | mean / p99 k=1000 ms | QPS capacity (k=10) "
        "| build CPU h (index / encoding) | build wall h | outside measured shard sizes |",
        "|---" * 13 + "|"]
    for p in report["projections"]:
        encode = f"{p['encode_cpu_hours']:,.0f}" if p["encode_cpu_hours"] is not None else "not measured"
        lines.append(
            f"| {p['docs']:,} | {p['index_gb']:,.1f} | {p['shards']} ({p['docs_per_shard']:,.0f}) | {p['copies']} "
            f"| {p['machines']} ({p['machines_for_memory']} / {p['machines_for_qps']}) "
            f"| {p['memory_per_machine_gb']:,.1f} | {p['build_peak_memory_gb']:,.1f} "
            f"| {p['mean_ms@10']:.1f} / {p['p99_ms@10']:.1f} | {p['mean_ms@1000']:.1f} / {p['p99_ms@1000']:.1f} "
            f"| {p['qps_capacity@10']:,.0f} | {p['build_cpu_hours']:,.1f} / {encode} | {p['build_wall_hours']:,.1f} "
            f"| {'yes: extrapolated' if p['extrapolated'] else 'no'} |")
    if report["inputs"]["serve_overhead_p50_ms"] is not None:
        lines += ["", f"Latencies are search compute; today's Ray Serve path adds about "
                      f"{inputs['serve_overhead_p50_ms']:.0f} ms a query on top (measured at p50 on SciFact)."]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shards_json", type=Path, help="eval/bench_shards.py's JSON")
    parser.add_argument("--encode", type=Path, help="eval/bench_ray_encode.py's JSON")
    parser.add_argument("--serve", type=Path, help="eval/bench_ray_serve.py's JSON")
    parser.add_argument("--docs", type=int, nargs="+", default=[8_800_000, 100_000_000])
    parser.add_argument("--memory-gb", type=float, default=64.0, help="memory of one machine")
    parser.add_argument("--fill", type=float, default=0.75, help="share of a machine's memory the index may take")
    parser.add_argument("--cpus", type=int, default=16, help="CPUs of one machine")
    parser.add_argument("--target-qps", type=float, default=200.0)
    parser.add_argument("--p99-ms", type=float, default=50.0, help="p99 at k = 10 a shard must keep")
    parser.add_argument("--shard-counts", type=int, nargs="+",
                        help="the measured shard counts the model uses (default: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not 0 < args.fill <= 1:
        parser.error("--fill must be in (0, 1]")
    load = lambda path: json.loads(path.read_text()) if path else None  # noqa: E731
    inputs = measured_inputs(load(args.shards_json), load(args.encode), load(args.serve), args.shard_counts)
    parameters = {"memory_gb": args.memory_gb, "fill": args.fill, "cpus": args.cpus, "target_qps": args.target_qps,
                  "p99_ms": args.p99_ms}
    report = {"inputs": inputs, "parameters": parameters,
              "projections": [project(n, inputs, args.memory_gb, args.fill, args.cpus, args.target_qps, args.p99_ms)
                              for n in args.docs]}
    publish(report, markdown, "cost_model.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
