"""Distributed indexing jobs on Ray Data: ``lsr index CORPUS --out DIR --ray [ADDRESS]``.

The corpus is cut into numbered blocks (`lsr.data.blocks`); a Ray Data pipeline sends the
blocks not yet indexed to an actor pool (`BlockIndexer`: one encoder per actor, on a GPU when
the cluster has them), which reads each block, encodes it and writes one segment per shard
into ``DIR/.ray-job/``. The driver (this process) publishes each finished block as it comes:
every shard's segment is renamed into that shard and committed with the shard's progress
(the blocks it holds) in the same commit, so a block is in a shard exactly when the shard's
newest commit says so. A rerun after a failure skips, per shard, the blocks already there
(progress: blocks done / total). When every block is in, each shard checks ids across its
segments, merges them into one from the float vectors the workers kept (as the one-process
job does), drops the progress from its metadata, and the manifest (``shards.json``) is
written: from then on the directory is a sharded index.

Every write to a shard is the driver's (it holds each shard's write lock), so nothing but Ray
is distributed here: no RPC, scheduler or lock of our own.
"""

from __future__ import annotations

import time
from pathlib import Path

from lsr.index import storage
from lsr.index.build import cross_segment_duplicates
from lsr.index.commit import SEGMENTS_DIR, generations, read_newest_commit
from lsr.index.doc_ids import DuplicateIdError
from lsr.index.live import LiveIndex
from lsr.index.shards import Manifest, check_num_shards, is_sharded, shard_names, write_manifest
from lsr.index.writer import IndexWriter
from lsr.scaleout.block_indexer import BlockIndexer, EncoderSpec, JobSpec

WORK_DIR = ".ray-job"
PROGRESS = "ray_job"  # the key of a shard's metadata that holds the job's progress until it ends
FINISHED = "ray_job_finished"  # then this one: the job's fingerprint (a rerun after a crash before the manifest)


class RayJobError(RuntimeError):
    """The directory holds another job, or the job cannot go on (the message says why)."""


# Ray Serve's HTTP proxy sends requests to the ingress over Serve's inter-deployment gRPC
# instead of actor calls (one of Serve's throughput-optimized settings, Ray >= 2.56): a hop
# costs less (5.7 against 6.4 ms on this project's 2-CPU machine, eval/results/bench_ray_serve_scifact.md).
# The ingress's own calls to the shards and the encoder choose gRPC per handle
# (`service.ray_serve`).
RAY_ENV = {"RAY_SERVE_PROXY_USE_GRPC": "1"}


def start_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to the cluster at ``address`` (``auto``: the one ``ray start`` runs here), or
    start a local one on this machine; reuses a connection this process already has.

    `RAY_ENV` goes to the processes of a local Ray (its environment, which they inherit; a
    value already set wins) and to this job's workers on a cluster (the job's runtime
    environment; the cluster's own services read theirs from ``ray start``'s environment)."""
    import os

    import ray

    if not ray.is_initialized():
        options = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
        if address:
            env = {name: os.environ.get(name, value) for name, value in RAY_ENV.items()}
            ray.init(address=address, runtime_env={"env_vars": env}, **options)
        else:
            for name, value in RAY_ENV.items():
                os.environ.setdefault(name, value)
            ray.init(num_cpus=num_cpus, **options)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # the job prints blocks done / total
    return ray


def while_ray_starts(address: str | None, work):
    """Start (or connect to) Ray on this thread while ``work()`` runs on another; returns what
    ``work`` returned.

    The driver loads its encoders only to record what they are, and that takes about 8 s here
    (torch, transformers and the model), as long as a local Ray's start-up: overlapped, the job
    reaches its first block 4 to 5 s sooner on 2 CPUs. Ray itself must start on this thread
    (started from another one, its driver could not reach its own GCS).
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="driver-encoders") as pool:
        result = pool.submit(work)
        start_ray(address)
        return result.result()


def default_actors(ray, gpus_per_actor: float, cpus_per_actor: int = 1) -> int:
    """One actor per GPU of the cluster when it has GPUs, else one per ``cpus_per_actor`` CPUs."""
    resources = ray.cluster_resources()
    if gpus_per_actor > 0 and resources.get("GPU", 0) >= gpus_per_actor:
        return max(1, int(resources["GPU"] // gpus_per_actor))
    return max(1, int(resources.get("CPU", 1) // cpus_per_actor))


def ray_index(source, out_dir: str | Path, num_shards: int, settings: dict, encoder: EncoderSpec | None = None,
              address: str | None = None, actors: int | None = None, cpus_per_actor: int = 1,
              gpus_per_actor: float | None = None, merge: bool = True, duplicates: str = "error", report=print,
              on_ray: bool = True) -> dict:
    """Run (or resume) a distributed indexing job; returns what it measured.

    Args:
        source: a `lsr.data.blocks.CorpusBlocks` (encoded by ``encoder``) or `VectorBlocks`.
        out_dir: the sharded index to write.
        num_shards: shards (documents go to `index.shards.shard_of` their id).
        settings: ``index.writer.index_settings(...)``: vocabulary, metadata, build options.
        encoder: how actors load their encoders (None for vectors given).
        address: a Ray cluster (``auto`` or ``host:port``); None starts a local Ray.
        actors: encoder actors (default: one per GPU, else one per ``cpus_per_actor`` CPUs).
        cpus_per_actor: CPUs (torch threads) per actor.
        gpus_per_actor: GPUs per actor (default: 1 when the cluster has GPUs, else 0).
        merge: merge each shard's segments into one at the end.
        duplicates: an id given twice: ``error`` or ``last`` (the last copy wins).
        report: where progress lines go.
        on_ray: False indexes the blocks in this process, one after another, with the same
            `BlockIndexer` and the same publishing (the crash-replay harness records the
            job's I/O so; no Ray is started).

    Raises:
        RayJobError: ``out_dir`` holds another job, or an index this job did not make (the
            same job, finished, returns at once: it may have stopped after its manifest).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_num_shards(num_shards)
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates must be error or last, got {duplicates!r}")
    fingerprint = source.fingerprint()
    if is_sharded(out_dir):
        if not _this_job_finished(out_dir, num_shards, fingerprint):
            raise RayJobError(f"{out_dir} is a finished sharded index; give a new directory")
        # This job, stopped after its manifest: only its work directory may be left to remove.
        storage.remove(out_dir / WORK_DIR, durable=True)
        report(f"blocks done {source.num_blocks} / {source.num_blocks}")
        return {"blocks": source.num_blocks, "blocks_indexed": 0, "actors": 0, "gpus_per_actor": 0.0,
                "seconds": time.perf_counter() - started, "encode_seconds": 0.0, "build_seconds": 0.0}
    shards = _open_shards(out_dir, num_shards, settings, fingerprint)
    try:
        work_dir = out_dir / WORK_DIR
        storage.make_dir(work_dir)
        done = [set(range(source.num_blocks)) if _finished(live) else set(_progress(live)["blocks"])
                for live in shards]
        todo = [b for b in range(source.num_blocks) if any(b not in d for d in done)]
        report(f"blocks done {source.num_blocks - len(todo)} / {source.num_blocks}")
        timings = {"encode_seconds": 0.0, "build_seconds": 0.0}
        if todo:  # (a rerun with every block in only finishes: no Ray needed)
            spec = JobSpec(str(work_dir), num_shards, settings, source, encoder, keep_floats=merge,
                           duplicates=duplicates)
            if on_ray:
                ray = start_ray(address)
                if gpus_per_actor is None:
                    gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
                actors = actors or default_actors(ray, gpus_per_actor, cpus_per_actor)
                indexed = _indexed_on_ray(ray, spec, todo, actors, gpus_per_actor, cpus_per_actor)
            else:
                actors, gpus_per_actor = 0, 0.0
                indexer = BlockIndexer(spec, threads=cpus_per_actor)
                indexed = ((block, indexer.index_block(block)) for block in todo)
            finished = source.num_blocks - len(todo)
            for block, rows in indexed:
                _publish_block(shards, done, block, rows)
                timings["encode_seconds"] += sum(float(row["encode_seconds"]) for row in rows)
                timings["build_seconds"] += sum(float(row["build_seconds"]) for row in rows)
                finished += 1
                report(f"blocks done {finished} / {source.num_blocks}")
        for name, live in zip(shard_names(num_shards), shards):
            if not _finished(live):
                _finish_shard(live, merge, duplicates, out_dir / name, fingerprint)
        write_manifest(out_dir, Manifest(tuple(shard_names(num_shards))))
        storage.remove(work_dir, durable=True)
    finally:
        for live in shards:
            live.close()
    return {"blocks": source.num_blocks, "blocks_indexed": len(todo), "actors": actors,
            "gpus_per_actor": gpus_per_actor, "seconds": time.perf_counter() - started,
            **{k: round(v, 3) for k, v in timings.items()}}


def _indexed_on_ray(ray, spec: JobSpec, todo: list[int], actors: int, gpus_per_actor: float, cpus_per_actor: int):
    """``(block, rows)`` for every block of ``todo`` as the actor pool finishes it (any order)."""
    dataset = ray.data.from_items([{"block": b} for b in todo], override_num_blocks=len(todo))
    indexed = dataset.map_batches(
        BlockIndexer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"spec": spec, "device": "cuda" if gpus_per_actor else "cpu", "threads": cpus_per_actor},
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None)
    for batch in indexed.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
        blocks = batch["block"].tolist()
        for block in sorted(set(blocks)):
            yield block, [{name: batch[name][i] for name in batch} for i, b in enumerate(blocks) if b == block]


def _this_job_finished(out_dir: Path, num_shards: int, fingerprint: str) -> bool:
    """Whether the sharded index in ``out_dir`` is this job's, finished (same shards, every
    shard's metadata holding the job's fingerprint)."""
    from lsr.index.shards import read_manifest

    manifest = read_manifest(out_dir)
    if manifest.shards != tuple(shard_names(num_shards)):
        return False
    return all(read_newest_commit(out_dir / name).settings["meta"].get(FINISHED) == fingerprint
               for name in manifest.shards)


def _open_shards(out_dir: Path, num_shards: int, settings: dict, fingerprint: str) -> list[LiveIndex]:
    """Each shard's index, created empty with the job's progress, or (a resumed job) checked."""
    job = {"fingerprint": fingerprint, "blocks": [], "segments": {}}
    shards = []
    try:
        for name in shard_names(num_shards):
            directory = out_dir / name
            if generations(directory):
                commit = read_newest_commit(directory)
                meta = commit.settings["meta"]
                progress = meta.get(PROGRESS) or {}
                if fingerprint not in (progress.get("fingerprint"), meta.get(FINISHED)):
                    raise RayJobError(f"{directory} holds an index that is not this job's (another corpus, block "
                                      f"size or shard count); give a new directory")
                if _without_progress(commit.settings) != settings:
                    raise RayJobError(f"{directory} was started with other index settings (encoder, quantisation, "
                                      f"doc order, block size); rerun with the same options or a new directory")
            else:
                with IndexWriter.create(directory, settings) as writer:
                    writer.publish([], meta={PROGRESS: job})
            shards.append(LiveIndex(directory, writer="required"))
    except BaseException:
        for live in shards:
            live.close()
        raise
    return shards


def _without_progress(settings: dict) -> dict:
    return {**settings, "meta": {k: v for k, v in settings["meta"].items() if k not in (PROGRESS, FINISHED)}}


def _progress(live: LiveIndex) -> dict:
    return live.writer.commit.settings["meta"][PROGRESS]


def _finished(live: LiveIndex) -> bool:
    """Whether the shard is final (merged, progress dropped): a job that stopped before its
    manifest leaves every shard so, or some."""
    return PROGRESS not in live.writer.commit.settings["meta"]


def _publish_block(shards: list[LiveIndex], done: list[set], block: int, rows: list[dict]) -> None:
    """Rename each shard's new segment into the shard and commit it with the shard's progress
    (one commit per shard: the segment and the fact that the block is in are one change)."""
    for shard, live in enumerate(shards):
        mine = [r for r in rows if int(r["shard"]) == shard and str(r["segment"])]
        if block in done[shard]:  # a resumed job ran it again for another shard
            continue
        writer = live.writer
        progress = _progress(live)
        names, segments = [], dict(progress["segments"])
        for row in mine:
            name = writer.new_segment_name()
            storage.rename(row["segment"], live.directory / SEGMENTS_DIR / name)
            names.append(name)
            # Relative to the job's directory: a rerun may see it under another path (moved, or
            # mounted elsewhere on another machine of the cluster).
            floats = str(row["floats"])
            segments[name] = {"block": block,
                              "floats": str(Path(floats).relative_to(live.directory.parent)) if floats else ""}
        done[shard].add(block)
        writer.publish(names, meta={PROGRESS: {**progress, "blocks": sorted(done[shard]), "segments": segments}})


def _finish_shard(live: LiveIndex, merge: bool, duplicates: str, directory: Path, fingerprint: str) -> None:
    """Ids across the shard's segments, the merge, and the metadata without the progress (but
    with the job's fingerprint, so a rerun knows the shard is done)."""
    writer = live.writer
    progress = _progress(live)
    built = progress["segments"]
    names = sorted((r.name for r in writer.commit.segments), key=lambda n: built.get(n, {}).get("block", -1))
    try:
        deleted = cross_segment_duplicates([directory / SEGMENTS_DIR / n for n in names], duplicates)
    except DuplicateIdError as error:
        raise DuplicateIdError(error.doc_id, f" (in two blocks of {directory}; the blocks done stay: rerun with "
                                             f"--duplicates last to keep the last copy)") from None
    if deleted:
        writer.delete_copies(deleted)
    floats = {n: directory.parent / built[n]["floats"] for n in names if n in built and built[n]["floats"]}
    if merge and len(names) > 1 and len(floats) == len(names):
        writer.merge_from_floats(names, floats, None)
    elif merge and (len(names) > 1 or deleted):
        writer.force_merge(1)
    new = []
    if not writer.commit.segments:  # no document of the corpus hashed to this shard
        builder = writer.new_segment()
        builder.finish()
        new.append(builder.out_dir.name)
    final = _without_progress(writer.commit.settings)
    writer.publish(new, settings={**final, "meta": {**final["meta"], FINISHED: fingerprint}})
