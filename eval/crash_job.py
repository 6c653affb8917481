"""Simulated power loss in a distributed indexing job: every fsync of its blocks, publishing,
merges and manifest (``lsr.scaleout.ray_indexing``), replayed with ``eval.crash_sim``.

The job runs in this process (``ray_index(..., on_ray=False)``: the same `BlockIndexer`
writing each block's segments and the same driver publishing them; only the pool is not Ray's)
over a small collection of random vectors, with its I/O recorded. A block counts as
acknowledged once the job has reported it done (every shard committed it); the job as a whole
once it returned. For every cut point the directory a power cut there leaves is rebuilt, and:

- a directory with the manifest is a finished sharded index: it opens and holds every
  document with its vector, and search equals brute force in every shard;
- otherwise each shard that has a commit holds exactly the documents of the blocks its commit
  says are in (its own share of them), and those include every acknowledged block;
- either way, the job run again on what the cut left finishes (on a finished index, at once),
  and the result holds every document of the collection, each once, with its vector; search
  equals brute force.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.eval.crash_sim import VOCAB, IoRecorder, _close, _vector, brute_force_top_k
from lsr.index import storage

NUM_SHARDS = 2


def make_collection(path: Path, rng, num_docs: int) -> dict:
    """A vector collection as ``make_bench_corpus.py`` writes one (doc i has id "d{i}"); id -> vector."""
    vectors = [_vector(rng) for _ in range(num_docs)]
    matrix = sp.vstack(vectors).tocsr()
    (path / "docs").mkdir(parents=True)
    np.save(path / "docs" / "indptr.npy", matrix.indptr.astype(np.int64))
    np.save(path / "docs" / "indices.npy", matrix.indices.astype(np.uint32))
    np.save(path / "docs" / "values.npy", matrix.data.astype(np.float32))
    (path / "meta.json").write_text(json.dumps({"vocab_size": VOCAB, "docs": num_docs}))
    return {f"d{i}": vector for i, vector in enumerate(vectors)}


def run_job(collection: Path, out: Path, block_docs: int, report=lambda line: None) -> dict:
    from lsr.index.writer import index_settings
    from lsr.data.blocks import VectorBlocks
    from lsr.scaleout.ray_indexing import ray_index

    settings = index_settings(VOCAB, {"corpus": str(collection)}, None, reorder="bp", block_size=4)
    return ray_index(VectorBlocks.open(collection, block_docs), out, NUM_SHARDS, settings, on_ray=False,
                     report=report)


def record_job(work: Path, rng, num_docs: int = 40, block_docs: int = 8) -> tuple[IoRecorder, Path, dict, int]:
    """Run the job with its I/O recorded; (recorder, collection, id -> vector, block size)."""
    collection = work / "collection"
    vectors = make_collection(collection, rng, num_docs)
    out = work / "job"
    out.mkdir()
    recorder = IoRecorder(out, {})

    def acknowledge(line: str) -> None:
        if line.startswith("blocks done"):
            recorder.mark("blocks", int(line.split()[2]))

    storage.set_recorder(recorder)
    try:
        run_job(collection, out, block_docs, acknowledge)
        recorder.mark("finished", True)
    finally:
        storage.set_recorder(None)
    return recorder, collection, vectors, block_docs


def check_job_cut(recorder: IoRecorder, cut: int, collection: Path, vectors: dict, block_docs: int, work: Path,
                  rng) -> str | None:
    """Rebuild what a cut leaves, check it, finish the job on it, check the result; a problem or None."""
    from lsr.index.shards import is_sharded

    target = work / f"cut-{cut}"
    recorder.durable_tree(cut, target)
    marks = [e for e in recorder.events[:cut] if e[0] == "mark"]
    acked_blocks = max([m[2] for m in marks if m[1] == "blocks"], default=0)
    finished = any(m[1] == "finished" for m in marks)
    try:
        if is_sharded(target):
            if problem := _check_finished(target, vectors, rng):
                return f"as the cut left it: {problem}"
        elif finished:
            return "the job had returned, but the directory is not a sharded index"
        elif problem := _check_in_progress(target, vectors, block_docs, acked_blocks):
            return f"as the cut left it: {problem}"
        run_job(collection, target, block_docs)
        if problem := _check_finished(target, vectors, rng):
            return f"after the job ran again: {problem}"
        return None
    except Exception as error:  # the directory must open and the job must finish: anything raised fails
        return f"{type(error).__name__}: {error}"
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _check_in_progress(target: Path, vectors: dict, block_docs: int, acked_blocks: int) -> str | None:
    from lsr.index.commit import generations
    from lsr.index.live import LiveIndex
    from lsr.index.shards import shard_names, shard_of
    from lsr.scaleout.ray_indexing import PROGRESS

    ids = list(vectors)
    for shard, name in enumerate(shard_names(NUM_SHARDS)):
        directory = target / name
        if not directory.exists() or not generations(directory):
            if acked_blocks:
                return f"{name} has no commit, but {acked_blocks} blocks were acknowledged"
            continue
        with LiveIndex(directory, writer="never") as live:
            meta = live.settings["meta"]
            blocks = set(meta[PROGRESS]["blocks"]) if PROGRESS in meta else None
            if blocks is None:  # merged and final already: every document of the shard is in
                blocks = set(range(-(-len(ids) // block_docs)))
            if not set(range(acked_blocks)) <= blocks:
                return f"{name} lost acknowledged blocks: it holds {sorted(blocks)}, {acked_blocks} were acknowledged"
            expected = {d for b in blocks for d in ids[b * block_docs : (b + 1) * block_docs]
                        if shard_of(d, NUM_SHARDS) == shard}
            held = _held(live)
            if held != expected:
                return (f"{name} holds other documents than its committed blocks: missing "
                        f"{sorted(expected - held)[:5]}, unexpected {sorted(held - expected)[:5]}")
    return None


def _check_finished(target: Path, vectors: dict, rng) -> str | None:
    from lsr.index.sharded import ShardedIndex

    with ShardedIndex(target, writer="never") as index:
        held = [doc_id for live in index.shards for doc_id in sorted(_held(live))]
        if sorted(held) != sorted(vectors):
            return f"the index holds {len(held)} documents ({len(set(held))} ids), not the {len(vectors)} given"
        for live in index.shards:
            bad = [d for d in _held(live) if not _close(live, d, vectors[d])]
            if bad:
                return f"stored vectors differ from the collection's: {bad[:5]}"
        for _ in range(3):
            query = _vector(rng, density=0.15)
            for scorer in ("exhaustive", "bmp"):
                ids, scores = index.search_sparse(query.indices, query.data, 10, scorer=scorer)
                per_shard = [brute_force_top_k(live.refresh(), query.indices, query.data, 10) for live in index.shards]
                expected = sorted((s for found in per_shard for _, s in found), reverse=True)[:10]
                if not np.allclose(scores, expected, rtol=1e-9):
                    return f"{scorer} search differs from brute force: {list(scores)} vs {expected}"
    return None


def _held(live) -> set[str]:
    view = live.refresh()
    return {state.segment.doc_ids[i] for state in view.segments for i in range(state.segment.num_docs)
            if not len(state.live) or state.live[i]}
