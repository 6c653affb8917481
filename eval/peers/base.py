"""The interface every peer-engine adapter implements, and the helpers that measure builds.

An adapter (`eval.peers.seismic.SeismicEngine`, `eval.peers.pisa.PisaEngine`) is built once
from a `SparseBatch`, in the batch's doc order (row ``i`` is internal doc id ``i``), then answers
one query at a time on the calling thread.

How a build is measured: in two phases, each in a fresh child Python process
(`run_build_child`), so that the engine's own cost is not mixed with our format conversion.

1. *convert*: our CSR arrays (memory-mapped) are written in the engine's native input format.
2. *engine*: the engine builds its index from that input alone and writes it to disk; the
   input files are then deleted.

`BuildReport` holds the *engine* phase: what a user of that engine pays, given its input files.
The *convert* phase goes in ``details`` (``convert_s``, ``convert_peak_rss_mb``); add it for an
end-to-end figure comparable to our own builder, which starts from the same arrays.

- Each child is pinned with ``sched_setaffinity`` to ``threads`` CPUs (and gets
  ``RAYON_NUM_THREADS``, ``OMP_NUM_THREADS`` and friends), so thread pools that size
  themselves from the CPU count (Rayon, TBB, OpenMP) stay within it.
- ``seconds`` is the wall time of the phase's function inside the child; it excludes starting
  Python, importing the engine and opening the input.
- ``peak_rss_mb`` is the child's peak resident set size, ``VmHWM`` of ``/proc/self/status``
  read by the child itself after the phase's function returned (the high-water mark of its
  address space since ``exec``). Not ``ru_maxrss``: Linux carries the parent's peak over
  ``fork``/``exec`` into the child's ``ru_maxrss`` (checked: a child of a 500 MB parent reports
  500 MB), and ``RUSAGE_CHILDREN`` is moreover the maximum over all children. It includes
  the interpreter and the engine's imports (and, in the convert phase, the pages of the
  memory-mapped input arrays, about ``nnz * 8 + rows * 8`` bytes); that part is also reported
  alone as ``baseline_rss_mb`` (the child's ``VmHWM`` just before the function starts), so
  ``peak_rss_mb - baseline_rss_mb`` is what the phase itself added at its peak.
- ``bytes_on_disk`` is the apparent size (``st_size``) of every regular file the engine keeps
  for searching, counted by `directory_size` after the adapter removed build-only files.

Linux only (``/proc/self/status``, ``sched_setaffinity``), like the rest of the benchmarks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lsr.index.quantize import quantize, scale_for
from lsr.index.sparse_batch import SparseBatch

_ARRAYS = ("indptr", "indices", "values")
_THREAD_ENV = (
    "RAYON_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BuildReport:
    """What building one engine's index cost.

    Attributes:
        seconds: wall time of the engine's build phase (see the module docstring).
        bytes_on_disk: apparent size of the files the engine searches from.
        peak_rss_mb: peak resident set size of the engine's build process in MiB, or None.
        notes: one line on what was built and how (quantisation, threads, parameters).
        details: anything else worth recording (phase timings, baseline RSS, counts).
    """

    seconds: float
    bytes_on_disk: int
    peak_rss_mb: float | None
    notes: str
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class PeerEngine(Protocol):
    """A peer engine behind the benchmark's interface."""

    name: str  # with its settings, e.g. "seismic(query_cut=10,heap_factor=0.9)"

    def build(self, docs: SparseBatch, work_dir: Path) -> BuildReport:
        """Indexes ``docs`` in their order (row ``i`` is doc id ``i``) under ``work_dir``."""
        ...

    def search(
        self, terms: np.ndarray, weights: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One query on the calling thread: (int64 doc ids, float32 scores), best first."""
        ...


@dataclass
class ChildBuild:
    """The outcome of `run_build_child`."""

    result: dict[str, Any]  # what the build function returned (JSON-serialisable)
    seconds: float  # wall time of the build function
    peak_rss_mb: float | None  # the child's VmHWM after the function returned
    baseline_rss_mb: float | None  # the child's VmHWM before the build function ran
    threads: int


MAX_INTEGER_IMPACT = 2**31 - 1  # PISA's and Lucene's term frequencies are signed 32-bit


def integer_impacts(values: np.ndarray, impact_scale: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Integer impacts (uint32) for an engine that takes term frequencies, and how they were got.

    Weights that already are integers in ``[0, MAX_INTEGER_IMPACT]`` are taken as they are
    unless ``impact_scale`` is given; otherwise they are quantised with `index.quantize.quantize`
    (scale = ``impact_scale``, or largest weight / 255).
    """
    values = np.asarray(values)
    integral = values.size == 0 or (
        float(values.min()) >= 0
        and float(values.max()) <= MAX_INTEGER_IMPACT
        and bool(np.all(values == np.floor(values)))
    )
    if impact_scale is None and integral:
        info = {"impacts": "given integer", "scale": 1.0, "clipped": 0, "zeroed": 0}
        return values.astype(np.uint32), info
    scale = impact_scale if impact_scale is not None else scale_for(float(values.max()))
    impacts, stats = quantize(values, scale)
    info = {"impacts": "uint8", "scale": scale, "clipped": stats.clipped, "zeroed": stats.zeroed}
    return impacts.astype(np.uint32), info


def directory_size(path: Path) -> int:
    """Total apparent size in bytes of the regular files under ``path`` (links not followed)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
    return total


def save_batch(batch: SparseBatch, folder: Path) -> dict[str, Any]:
    """Writes the batch's CSR arrays as ``.npy`` files; returns the spec `load_batch` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in _ARRAYS:
        paths[name] = str(folder / f"{name}.npy")
        np.save(paths[name], getattr(batch, name))
    return {"paths": paths, "vocab_size": batch.vocab_size}


def load_batch(spec: dict[str, Any]) -> SparseBatch:
    """Opens a batch written by `save_batch` (or found by `_batch_files`), memory-mapped."""
    arrays = {name: np.load(spec["paths"][name], mmap_mode="r") for name in _ARRAYS}
    return SparseBatch(vocab_size=int(spec["vocab_size"]), **arrays)


def run_build_child(
    target: str,
    out_dir: Path,
    params: dict[str, Any],
    *,
    docs: SparseBatch | None = None,
    threads: int = 1,
    preload: tuple[str, ...] = (),
    scratch_dir: Path | None = None,
) -> ChildBuild:
    """Runs ``target`` in a child process and measures it.

    Args:
        target: ``"module:function"``, called as ``function(docs, out_dir, **params)`` when
            ``docs`` is given, else ``function(out_dir, **params)``; it returns a
            JSON-serialisable dict.
        out_dir: where the function writes.
        params: keyword arguments for the function (JSON-serialisable).
        docs: the collection, if the function needs it; passed to the child as memory-mapped
            ``.npy`` files (the batch's own files when it already is a whole-file memory map,
            else copies in ``scratch_dir``, removed afterwards).
        threads: CPUs the child is pinned to (and the thread-count variables it gets).
        preload: modules imported before the baseline memory reading and the timer.
        scratch_dir: where to put the input copies and the child's log (appended to, named
            ``<out_dir name>-build.log``); default ``out_dir.parent``.

    Returns:
        The function's result, its wall seconds, the child's peak and baseline RSS.

    Raises:
        RuntimeError: the child failed; the message ends with the tail of its log.
    """
    out_dir = Path(out_dir)
    scratch = Path(scratch_dir) if scratch_dir is not None else out_dir.parent
    scratch.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    input_dir = scratch / f"build-input-{stamp}"
    spec_path = scratch / f"build-spec-{stamp}.json"
    result_path = scratch / f"build-result-{stamp}.json"
    log_path = scratch / f"{out_dir.name}-build.log"
    batch_spec = None
    if docs is not None:
        batch_spec = _batch_files(docs) or save_batch(docs, input_dir)
    spec = {
        "target": target,
        "batch": batch_spec,
        "out_dir": str(out_dir),
        "params": params,
        "threads": threads,
        "preload": list(preload),
        "result_path": str(result_path),
    }
    spec_path.write_text(json.dumps(spec))
    try:
        code = _run_child(spec_path, log_path, threads)
        if code != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{target} failed in the build process (exit {code}):\n{tail}")
        child = json.loads(result_path.read_text())
    finally:
        for path in (spec_path, result_path):
            path.unlink(missing_ok=True)
        if input_dir.exists():
            for file in input_dir.iterdir():
                file.unlink()
            input_dir.rmdir()
    return ChildBuild(
        result=child["result"],
        seconds=child["seconds"],
        peak_rss_mb=child["peak_rss_mb"],
        baseline_rss_mb=child["baseline_rss_mb"],
        threads=threads,
    )


def phased_report(
    convert: ChildBuild, engine: ChildBuild, index_dir: Path, notes: str, details: dict[str, Any]
) -> BuildReport:
    """The `BuildReport` of a two-phase build: the engine phase, with the conversion in details."""
    return BuildReport(
        seconds=engine.seconds,
        bytes_on_disk=directory_size(index_dir),
        peak_rss_mb=engine.peak_rss_mb,
        notes=f"{notes}; engine phase only, our conversion in details",
        details={
            **details,
            "baseline_rss_mb": engine.baseline_rss_mb,
            "convert_s": convert.seconds,
            "convert_peak_rss_mb": convert.peak_rss_mb,
            "build_threads": engine.threads,
        },
    )


def peak_rss_mb() -> float | None:
    """This process's peak resident set size so far (``VmHWM``) in MiB, or None."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def _run_child(spec_path: Path, log_path: Path, threads: int) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(_REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    for name in _THREAD_ENV:
        env[name] = str(threads)
    code = "from lsr.eval.peers.base import _child_main; _child_main()"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            return proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def _child_main() -> None:
    """Entry point of the build child (see `run_build_child`)."""
    import importlib

    spec = json.loads(Path(sys.argv[1]).read_text())
    threads = int(spec["threads"])
    if threads > 0 and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cpus)
    for module in spec["preload"]:
        importlib.import_module(module)
    module_name, function_name = spec["target"].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    args: list[Any] = [Path(spec["out_dir"])]
    if spec["batch"] is not None:
        args.insert(0, load_batch(spec["batch"]))  # validation reads every page of the input
    baseline = peak_rss_mb()
    start = time.perf_counter()
    result = function(*args, **spec["params"])
    seconds = time.perf_counter() - start
    record = {"result": result, "seconds": seconds, "baseline_rss_mb": baseline}
    record["peak_rss_mb"] = peak_rss_mb()
    Path(spec["result_path"]).write_text(json.dumps(record))


def _batch_files(batch: SparseBatch) -> dict[str, Any] | None:
    """The ``.npy`` files behind a batch that is memory-mapped whole from them, else None."""
    paths = {}
    for name in _ARRAYS:
        array = getattr(batch, name)
        mapped = array
        while mapped is not None and not isinstance(mapped, np.memmap):
            mapped = getattr(mapped, "base", None)
        if mapped is None or not isinstance(mapped.filename, (str, os.PathLike)):
            return None
        filename = os.fspath(mapped.filename)  # np.load keeps a Path as it was given
        if not filename.endswith(".npy") or mapped.shape != array.shape:
            return None
        if mapped.dtype != array.dtype or mapped.ctypes.data != array.ctypes.data:
            return None
        paths[name] = filename
    return {"paths": paths, "vocab_size": batch.vocab_size}

