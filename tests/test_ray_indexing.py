"""The distributed indexing job on a real local Ray (two CPUs): two encoder actors, two shards,
against the one-process sharded build; resuming after the job's processes are killed."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from index.sharded import ShardedIndex
from index.shards import read_manifest
from index.writer import index_settings
from lsr.data.blocks import CorpusBlocks
from lsr.data.loaders import iter_corpus
from lsr.indexing import index_corpus
from lsr.scaleout.block_indexer import EncoderSpec
from lsr.scaleout.ray_indexing import RayJobError, ray_index

DOC_MAX_LENGTH = 64  # short documents keep the 1,000-document job quick on two CPUs


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus_1000(tmp_path_factory, scifact_dir):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with gzip.open(scifact_dir / "corpus.jsonl.gz", "rt") as source:
        path.write_text("".join(next(source) for _ in range(1000)))
    return path


@pytest.fixture(scope="module")
def short_encoder():
    from lsr.encoders.loading import load_encoder

    return load_encoder(None, doc_max_length=DOC_MAX_LENGTH)


def job_settings(encoder, corpus) -> dict:
    return index_settings(encoder.vocab_size, {"encoder": encoder.describe(), "corpus": str(corpus)}, None,
                          reorder="none", block_size=8, store_texts=True)


def test_ray_job_equals_the_one_process_build(tmp_path, ray_cluster, corpus_1000, short_encoder):
    source = CorpusBlocks.open(str(corpus_1000), 250)
    lines = []
    done = ray_index(source, tmp_path / "ray", 2, job_settings(short_encoder, corpus_1000),
                     EncoderSpec(None, doc_max_length=DOC_MAX_LENGTH), actors=2, report=lines.append)
    assert done["actors"] == 2 and done["blocks"] == 4 and lines[0] == "blocks done 0 / 4"
    assert lines[-1] == "blocks done 4 / 4" and done["encode_seconds"] > 0
    assert not (tmp_path / "ray" / ".ray-job").exists()
    index_corpus(iter_corpus(corpus_1000), short_encoder, tmp_path / "one", str(corpus_1000), show_progress=False,
                 shards=2, reorder="none", block_size=8)
    with ShardedIndex(tmp_path / "ray", writer="never") as ray_built, \
            ShardedIndex(tmp_path / "one", writer="never") as one:
        assert ray_built.num_docs == one.num_docs == 1000
        assert "ray_job" not in ray_built.meta
        for a, b in zip(ray_built.shards, one.shards):
            (sa,), (sb,) = a.refresh().segments, b.refresh().segments
            assert [sa.segment.doc_ids[i] for i in range(sa.segment.num_docs)] == \
                [sb.segment.doc_ids[i] for i in range(sb.segment.num_docs)]
            # Equal vectors: the same model on the same texts; batches of other documents
            # change float sums in the last bits (about 3e-6), so an impact may move one level.
            np.testing.assert_allclose(sa.segment.term_scales, sb.segment.term_scales, rtol=1e-4, atol=1e-7)
            da, db = sa.segment.to_scipy_docs(), sb.segment.to_scipy_docs()
            assert (da != 0).nnz == (db != 0).nnz
            assert abs(da - db).max() <= 1 and (da != db).nnz <= 0.002 * da.nnz
        for query in ("stem cells", "vitamin D deficiency", "protein folding in bacteria"):
            terms, weights = short_encoder.encode_queries([query]).row(0)
            assert ray_built.search_sparse(terms, weights, 10)[0][:5] == one.search_sparse(terms, weights, 10)[0][:5]


def test_a_killed_job_resumes_where_it_stopped(tmp_path, corpus_1000):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(corpus_1000.read_text().splitlines(keepends=True)[:240]))
    command = [sys.executable, "-m", "lsr.cli", "index", str(corpus), "--out", str(tmp_path / "ix"), "--ray",
               "--shards", "2", "--block-docs", "30", "--actors", "1", "--doc-max-length", str(DOC_MAX_LENGTH)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    seen = []
    for line in job.stdout:  # kill the job (driver, Ray and its workers) once two blocks are in
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
    assert "indexed 240 documents" in again.stdout
    with ShardedIndex(tmp_path / "ix", writer="never") as index:
        assert index.num_docs == 240 and read_manifest(tmp_path / "ix").num_shards == 2
        ids = [json.loads(line)["_id"] for line in corpus.read_text().splitlines()]
        assert all(index.contains(doc_id) for doc_id in ids)


def test_a_rerun_on_another_corpus_is_refused(tmp_path, ray_cluster, corpus_1000, short_encoder):
    small = tmp_path / "small.jsonl"
    small.write_text("".join(corpus_1000.read_text().splitlines(keepends=True)[:20]))
    settings = job_settings(short_encoder, small)
    spec = EncoderSpec(None, doc_max_length=DOC_MAX_LENGTH)
    ray_index(CorpusBlocks.open(str(small), 10), tmp_path / "ix", 2, settings, spec, actors=1, report=lambda _: None)
    with pytest.raises(RayJobError, match="finished sharded index"):
        ray_index(CorpusBlocks.open(str(small), 10), tmp_path / "ix", 2, settings, spec, report=lambda _: None)
    (tmp_path / "ix" / "shards.json").unlink()  # as if the first job had stopped before its end
    other = tmp_path / "other.jsonl"
    other.write_text("".join(corpus_1000.read_text().splitlines(keepends=True)[20:50]))
    with pytest.raises(RayJobError, match="not this job's"):
        ray_index(CorpusBlocks.open(str(other), 10), tmp_path / "ix", 2, settings, spec, report=lambda _: None)
