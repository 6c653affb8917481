"""Corpus blocks (`lsr.data.blocks`) and what a worker makes of one (`BlockIndexer`, without Ray)."""

import json

import numpy as np
import pytest

from lsr.index.format import Segment
from lsr.index.shards import shard_of
from lsr.index.writer import index_settings
from lsr.data.blocks import CorpusBlocks, VectorBlocks, auto_block_docs
from lsr.data.loaders import DataFormatError, iter_corpus
from lsr.scaleout.block_indexer import BlockIndexer, JobSpec


def write_corpus(path, docs: int, blank_every: int = 4):
    lines = []
    for i in range(docs):
        lines.append(json.dumps({"_id": f"doc-{i}", "title": f"t{i}", "text": f"text {i}"}) + "\n")
        if i % blank_every == 0:
            lines.append("\n")  # blank lines are skipped, as the one-process loader skips them
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("block_docs", [1, 3, 7, 100])
def test_blocks_concatenate_to_the_corpus(tmp_path, block_docs):
    path = write_corpus(tmp_path / "corpus.jsonl", 23)
    blocks = CorpusBlocks.open(str(path), block_docs)
    assert blocks.num_docs == 23 and blocks.num_blocks == -(-23 // block_docs)
    read = [d for b in range(blocks.num_blocks) for d in blocks.read(b)]
    assert read == list(iter_corpus(path))
    with pytest.raises(IndexError):
        blocks.read(blocks.num_blocks)


def test_automatic_block_size_follows_the_corpus_size(tmp_path):
    assert [auto_block_docs(n) for n in (0, 1, 3200, 3201, 5183, 640_000, 8_800_000)] == [
        50, 50, 50, 100, 100, 10_000, 10_000]
    path = write_corpus(tmp_path / "corpus.jsonl", 3333)  # 3,333 documents: blocks of 100 (multiples of 50)
    blocks = CorpusBlocks.open(str(path))
    assert (blocks.block_docs, blocks.num_blocks) == (100, 34)
    assert [d for b in range(blocks.num_blocks) for d in blocks.read(b)] == list(iter_corpus(path))
    assert blocks.fingerprint() == CorpusBlocks.open(str(path), 100).fingerprint()


def test_a_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n\n{"_id": "b"}\n')
    blocks = CorpusBlocks.open(str(path), 1)
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:3: missing field 'text'"):
        blocks.read(1)


def test_vector_blocks_and_a_worker_block(tmp_path):
    rng = np.random.default_rng(5)
    rows = [np.sort(rng.choice(40, size=rng.integers(1, 6), replace=False)).astype(np.uint32) for _ in range(11)]
    (tmp_path / "c" / "docs").mkdir(parents=True)
    np.save(tmp_path / "c" / "docs" / "indptr.npy", np.concatenate([[0], np.cumsum([len(r) for r in rows])]))
    np.save(tmp_path / "c" / "docs" / "indices.npy", np.concatenate(rows))
    np.save(tmp_path / "c" / "docs" / "values.npy", rng.random(sum(len(r) for r in rows)).astype(np.float32) + 0.1)
    (tmp_path / "c" / "meta.json").write_text(json.dumps({"vocab_size": 40}))
    source = VectorBlocks.open(tmp_path / "c", 4)
    assert (source.num_docs, source.num_blocks, source.vocab_size) == (11, 3, 40)
    ids, batch = source.read_vectors(2)
    assert ids == ["d8", "d9", "d10"] and [batch.row(i)[0].tolist() for i in range(3)] == [r.tolist() for r in rows[8:]]
    settings = index_settings(40, {"corpus": "c"}, None, reorder="none", block_size=2)
    out = BlockIndexer(JobSpec(str(tmp_path / "work"), 2, settings, source, keep_floats=False)).index_block(1)
    assert sum(r["docs"] for r in out) == 4
    for row in out:
        segment = Segment.open(row["segment"])
        held = [segment.doc_ids[i] for i in range(segment.num_docs)]
        assert all(shard_of(d, 2) == row["shard"] for d in held) and set(held) <= {"d4", "d5", "d6", "d7"}


def test_a_worker_encodes_on_its_own_cpus_after_building_a_segment(tmp_path, encoder):
    """A one-CPU worker encodes every block on one torch thread. Building a segment launches
    numba's parallel BP kernels, whose OpenMP layer sets the thread's OpenMP count (which torch
    reads) to all the machine's CPUs: the worker sets its own again before each block."""
    import numba
    import torch

    from lsr.scaleout.block_indexer import EncoderSpec

    assert numba.config.NUMBA_NUM_THREADS > 1, "the test needs a machine with 2 CPUs or more"
    source = CorpusBlocks.open(str(write_corpus(tmp_path / "corpus.jsonl", 120)), 60)
    settings = index_settings(encoder.vocab_size, {"corpus": "c"}, None, reorder="bp", block_size=8)
    previous = torch.get_num_threads()
    try:
        worker = BlockIndexer(JobSpec(str(tmp_path / "work"), 1, settings, source, EncoderSpec(None, batch_size=8),
                                      keep_floats=False), threads=1)
        seen = []
        encode = worker.encoder.encode_documents
        worker.encoder.encode_documents = lambda texts: (seen.append(torch.get_num_threads()), encode(texts))[1]
        worker.index_block(0)
        worker.index_block(1)
        assert seen == [1, 1]  # [1, 2] when the worker set its threads only once
    finally:
        torch.set_num_threads(previous)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
