"""The distributed indexing job on a real local Ray (two CPUs): two encoder actors, two shards,
against the one-process job; resuming after the job's processes are killed."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lsr.index.live import LiveIndex
from lsr.index.sharded import ShardedIndex
from lsr.index.shards import read_manifest, shard_of
from lsr.index.writer import index_settings
from lsr.data.blocks import CorpusBlocks
from lsr.scaleout.block_indexer import EncoderSpec
from lsr.scaleout.ray_indexing import RayJobError, ray_index

from tests.conftest import RAY_DOC_MAX_LENGTH as DOC_MAX_LENGTH


def job_settings(encoder, corpus) -> dict:
    return index_settings(encoder.vocab_size, {"encoder": encoder.describe(), "corpus": str(corpus)}, None,
                          reorder="none", block_size=8, store_texts=True)


def test_ray_job_equals_the_one_process_build(ray_index_1000, single_index_1000):
    """Two encoder actors, two shards: every document's vector (terms, impacts, dense) is the
    one the one-process job gives, and every document is in the shard that owns its id."""
    path, done, lines = ray_index_1000
    assert done["actors"] == 2 and done["blocks"] == 2 and lines[0] == "blocks done 0 / 2"
    assert lines[-1] == "blocks done 2 / 2" and done["encode_seconds"] > 0
    assert not (path / ".ray-job").exists()
    with ShardedIndex(path, writer="never") as sharded, LiveIndex(single_index_1000, writer="never") as single:
        assert sharded.num_docs == single.num_docs == 1000
        assert "ray_job" not in sharded.meta and sharded.meta["encoder"] == single.meta["encoder"]
        (one,) = single.refresh().segments
        single_dense = one.segment.dense.vectors()
        shard_dense = {}  # doc id -> its dense vector in the shard that holds it
        for live in sharded.shards:
            (state,) = live.refresh().segments
            vectors = state.segment.dense.vectors()
            shard_dense.update({state.segment.doc_ids[i]: vectors[i] for i in range(state.segment.num_docs)})
        for internal in range(one.segment.num_docs):
            doc_id = one.segment.doc_ids[internal]
            owner = sharded.shards[shard_of(doc_id, 2)]
            assert owner.contains(doc_id)
            terms, _, impacts, _ = owner.document_vector(doc_id)
            expected_terms, _, expected_impacts, _ = single.document_vector(doc_id)
            assert np.array_equal(terms, expected_terms) and np.array_equal(impacts, expected_impacts), doc_id
            # Dense vectors agree to float32 rounding (torch sums in another order with one thread).
            np.testing.assert_allclose(shard_dense[doc_id], single_dense[internal], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # two runs of the command (about a minute): `pytest -m slow`
def test_a_killed_job_resumes_where_it_stopped(tmp_path, ray_cluster, corpus_1000):
    """The job's driver killed (SIGKILL, on a cluster that lives on) after two blocks are in;
    the rerun skips them."""
    address = ray_cluster.get_runtime_context().gcs_address
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(corpus_1000.read_text().splitlines(keepends=True)[:120]))
    command = [sys.executable, "-m", "lsr.cli", "index", str(corpus), "--out", str(tmp_path / "ix"), "--ray",
               address, "--shards", "2", "--block-docs", "15", "--actors", "1", "--doc-max-length", str(DOC_MAX_LENGTH)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    seen = []
    for line in job.stdout:  # kill the driver once two blocks are in
        seen.append(line)
        if line.startswith("blocks done 2 / 8"):
            os.killpg(job.pid, signal.SIGKILL)
            break
    job.wait()
    assert any(line.startswith("blocks done 2 / 8") for line in seen), "".join(seen)
    time.sleep(1)
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    first = next(line for line in again.stdout.splitlines() if line.startswith("blocks done"))
    assert int(first.split()[2]) >= 2  # what was committed before the kill is not done again
    assert "indexed 120 documents" in again.stdout
    with ShardedIndex(tmp_path / "ix", writer="never") as index:
        assert index.num_docs == 120 and read_manifest(tmp_path / "ix").num_shards == 2
        ids = [json.loads(line)["_id"] for line in corpus.read_text().splitlines()]
        assert all(index.contains(doc_id) for doc_id in ids)


def test_a_rerun_on_another_corpus_is_refused(tmp_path, ray_cluster, corpus_1000, short_encoder):
    small = tmp_path / "small.jsonl"
    small.write_text("".join(corpus_1000.read_text().splitlines(keepends=True)[:20]))
    settings = job_settings(short_encoder, small)
    spec = EncoderSpec(None, doc_max_length=DOC_MAX_LENGTH)
    other = tmp_path / "other.jsonl"
    other.write_text("".join(corpus_1000.read_text().splitlines(keepends=True)[20:50]))
    ray_index(CorpusBlocks.open(str(small), 10), tmp_path / "ix", 2, settings, spec, actors=1, report=lambda _: None)
    lines = []  # the same job again (as if it had stopped after its manifest): nothing to do
    ray_index(CorpusBlocks.open(str(small), 10), tmp_path / "ix", 2, settings, spec, report=lines.append)
    assert lines == ["blocks done 2 / 2"]
    with pytest.raises(RayJobError, match="finished sharded index"):
        ray_index(CorpusBlocks.open(str(other), 10), tmp_path / "ix", 2, settings, spec, report=lambda _: None)
    (tmp_path / "ix" / "shards.json").unlink()  # as if the job had stopped before its manifest
    lines = []
    ray_index(CorpusBlocks.open(str(small), 10), tmp_path / "ix", 2, settings, spec, report=lines.append)
    assert lines == ["blocks done 2 / 2"]  # nothing done again: the manifest only
    with ShardedIndex(tmp_path / "ix", writer="never") as index:
        assert index.num_docs == 20
    (tmp_path / "ix" / "shards.json").unlink()
    with pytest.raises(RayJobError, match="not this job's"):
        ray_index(CorpusBlocks.open(str(other), 10), tmp_path / "ix", 2, settings, spec, report=lambda _: None)
