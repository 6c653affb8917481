"""The engine benchmark's disk-backed helpers against plain scipy on random data."""

import numpy as np
import scipy.sparse as sp

from lsr.eval.bench_collection import VOCAB_SIZE, impact_docs, reordered_docs
from lsr.eval.bench_engines import exact_float_reference
from lsr.index.build import build_index
from lsr.index.live import open_single_segment
from lsr.index.sparse_batch import SparseBatch


def random_docs(rng, rows: int, density: float = 0.002) -> sp.csr_matrix:
    docs = sp.random(rows, VOCAB_SIZE, density=density, random_state=rng, format="csr", dtype=np.float32)
    docs.data = np.ceil(docs.data * 4)  # few distinct values: many tied scores
    return docs


def test_reordered_docs_equal_scipy_row_indexing(tmp_path):
    rng = np.random.default_rng(0)
    docs = random_docs(rng, 300).tolil()
    docs[5, :] = 0  # an empty row
    docs = docs.tocsr()
    docs.eliminate_zeros()
    assert docs[5].nnz == 0
    order = rng.permutation(300)
    found = reordered_docs(SparseBatch.from_scipy(docs), order, tmp_path / "r")
    assert isinstance(found.indices.base, np.memmap) or isinstance(found.indices, np.memmap)
    assert (found.to_scipy() != docs[order]).nnz == 0


def test_impact_docs_equal_the_index_impacts(tmp_path):
    rng = np.random.default_rng(1)
    docs = random_docs(rng, 500)
    ids = [f"d{i}" for i in range(500)]
    build_index(tmp_path / "ix", [(ids, SparseBatch.from_scipy(docs), None)], VOCAB_SIZE, reorder="bp", block_size=8)
    index = open_single_segment(tmp_path / "ix")
    found = impact_docs(index, tmp_path / "impacts")
    expected = index.to_scipy_docs()
    assert found.to_scipy().shape == expected.shape
    assert (found.to_scipy() != expected).nnz == 0
    assert all(np.all(np.diff(found.row(d)[0].astype(np.int64)) > 0) for d in range(len(found)))


def test_chunked_float_reference_equals_one_pass(tmp_path):
    rng = np.random.default_rng(2)
    docs = SparseBatch.from_scipy(random_docs(rng, 1000, 0.01))
    queries = SparseBatch.from_scipy(random_docs(rng, 20, 0.003))
    dense = docs.to_scipy().astype(np.float64) @ queries.to_scipy().astype(np.float64).T
    for k in (1, 10, 2000):
        found = exact_float_reference(docs, queries, k, chunk=97)
        for q in range(len(queries)):
            scores = dense[:, q].toarray().ravel()
            positive = np.flatnonzero(scores > 0)
            expected = positive[np.lexsort((positive, -scores[positive]))][:k]
            assert found[q].tolist() == expected.tolist()


def test_cost_model_fits_and_projects():
    from lsr.eval.cost_model import linear_fit, power_fit, project

    sizes = [1e6, 2e6, 4e6, 8e6]
    a, b = power_fit(sizes, [0.002 * s**0.7 for s in sizes])
    assert np.isclose(a, 0.002) and np.isclose(b, 0.7)
    assert np.allclose(linear_fit(sizes, [300 + 0.001 * s for s in sizes]), (300, 0.001))
    inputs = {"shard_sizes": sizes, "bytes_per_doc": 2000.0, "build_cpu_seconds_per_doc": 0.001,
              "build_peak_rss_mb": (300.0, 0.0005), "concurrency_efficiency": 1.0,
              "encode_docs_per_second_per_cpu": None, "serve_overhead_p50_ms": None,
              "fits": {"mean_ms@10": (1e-6, 1.0), "p99_ms@10": (1e-5, 1.0), "mean_ms@1000": (1e-5, 1.0),
                       "p99_ms@1000": (1e-4, 1.0)}, "each_shard_fit": (1e-6, 1.0), "shard_counts": [8, 4, 2, 1]}
    # 100M docs x 2000 bytes = 186 GB. p99 = 1e-5 x docs a shard <= 50 ms: 5M docs, so 32 shards
    # (3.1M docs, 31 ms). Memory: 186 / 48 GB = 4 machines; QPS: 100 x 32 shards x 3.1 ms of a
    # core = 10 core-seconds a second, one 16-core machine: memory decides, one copy.
    plan = project(100_000_000, inputs, memory_gb=64, fill=0.75, cpus=16, target_qps=100, p99_ms=50)
    assert plan["shards"] == 32 and plan["p99_ms@10"] <= 50 and plan["docs_per_shard"] == 100_000_000 / 32
    assert (plan["machines_for_memory"], plan["machines_for_qps"], plan["machines"], plan["copies"]) == (4, 1, 4, 1)
    assert np.isclose(plan["qps_capacity@10"], 4 * 16 / (32 * 1e-6 * 100_000_000 / 32 / 1000))
    assert plan["extrapolated"] is False
    busy = project(100_000_000, inputs, memory_gb=64, fill=0.75, cpus=16, target_qps=5000, p99_ms=50)
    # 5,000 QPS x 0.1 core-seconds = 500 cores: 32 machines, room for 8 copies of the index
    assert busy["machines_for_qps"] == 32 and busy["machines"] == 32 and busy["copies"] == 8
    assert plan["encode_cpu_hours"] is None and np.isclose(plan["build_cpu_hours"], 100_000 / 3600)
    # latency that does not grow with size never makes one shard of 186 GB: a shard fits a machine
    flat = {**inputs, "fits": {name: (5.0, 0.0) for name in inputs["fits"]}}
    assert project(100_000_000, flat, memory_gb=64, fill=0.75, cpus=16, target_qps=100, p99_ms=50)["shards"] == 4
    assert power_fit(sizes, [8.0, 6.0, 5.0, 4.0]) == (float(np.exp(np.log([8.0, 6.0, 5.0, 4.0]).mean())), 0.0)


def test_cpu_usage_reads_this_process_and_classifies_ray_processes():
    import os
    import subprocess
    import sys

    from lsr.eval.cpu_usage import machine_busy_seconds, process_cpu_seconds, ray_process_kind

    busy, own = machine_busy_seconds(), process_cpu_seconds(os.getpid())
    child = subprocess.run([sys.executable, "-c", "sum(range(30_000_000))"], check=True)
    assert child.returncode == 0
    total = sum(i * i for i in range(2_000_000))  # this process's own CPU, counted in its stat
    assert total > 0
    assert process_cpu_seconds(os.getpid()) > own
    assert machine_busy_seconds() - busy >= 0.2  # the child's time is the machine's
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert process_cpu_seconds(dead.pid) is None
    assert ray_process_kind("/v/ray/core/src/ray/raylet/raylet --node_ip_address=1") == "raylet"
    assert ray_process_kind("/v/ray/core/src/ray/gcs/gcs_server --port=1") == "gcs"
    assert ray_process_kind("ray::IDLE") == "idle workers"
    assert ray_process_kind("ray::MapWorker(MapBatches(BlockIndexer))") == "actors and tasks"
    assert ray_process_kind("python -u /v/ray/dashboard/agent.py --x") == "other Ray services"
    assert ray_process_kind("python eval/bench_ray_encode.py") is None


def test_process_sampler_counts_a_process_that_ended_before_it_stopped():
    import os
    import subprocess
    import sys
    import time

    from lsr.eval.cpu_usage import ProcessCpuSampler

    children = []
    sampler = ProcessCpuSampler(interval=0.05, role=lambda pid, command: "driver" if pid == os.getpid() else
                                "child" if children and pid == children[0].pid else "others").start()
    children.append(subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.5\n"
                                      "while time.process_time() < end: pass\ntime.sleep(0.2)"]))
    children[0].wait()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # the driver's own share
        pass
    roles = sampler.stop()
    assert 0.4 <= roles["child"] < 1.0  # gone before stop(): its samples count
    assert 0.3 <= roles["driver"] < 1.0
    assert any("process_time" in name for name, _ in sampler.busiest(5))  # named by its command line


def test_publish_records_the_machine_and_command_and_saves_both_files(tmp_path, capsys):
    import json

    from lsr.eval.report import publish

    report = {"figure": 1.5}
    publish(report, lambda r: f"figure {r['figure']} on {r['machine']['cpus']} CPUs\n", "bench_x.py",
            ["--docs", "10", "a b"], tmp_path / "results" / "bench_x")
    saved = json.loads((tmp_path / "results" / "bench_x.json").read_text())
    assert saved["command"] == "python eval/bench_x.py --docs 10 'a b'"
    assert saved["figure"] == 1.5 and saved["machine"]["cpus"] >= 1
    assert capsys.readouterr().out == (tmp_path / "results" / "bench_x.md").read_text() + "\n"  # print adds one


def test_encode_layout_times_real_children_and_lists_each_layout_once():
    from lsr.eval.bench_encode_layout import layouts, markdown, run_layout

    assert layouts(2) == [(1, 2), (2, 1), (1, 1)]
    assert layouts(1) == [(1, 1)]  # one CPU: the three layouts are one
    run = run_layout(3, processes=1, threads=1)  # a child loads the bundled model and encodes
    assert run["docs_per_second"] > 0 and run["cpu_seconds_per_doc"] > 0 and len(run["children"]) == 1
    text = markdown({"docs": 3, "rounds": 1, "layouts": {"1 x 1": [run]}, "machine": {"platform": "p", "cpus": 2},
                     "command": "python eval/bench_encode_layout.py"})
    assert f"| 1 x 1 | {run['docs_per_second']:.2f} |" in text
