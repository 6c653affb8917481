"""Shared fixtures: the bundled encoder (loaded once) and a small real BEIR subset."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lsr.data.datasets import data_dir


@pytest.fixture(scope="session", autouse=True)
def private_graph_cache(tmp_path_factory):
    """ONNX query graphs go to a cache of this test session (servers started by tests inherit
    it): the user's cache can then neither change what ``auto`` picks nor gain test graphs."""
    import os

    previous = os.environ.get("LSR_CACHE_DIR")
    os.environ["LSR_CACHE_DIR"] = str(tmp_path_factory.mktemp("lsr-cache"))
    yield Path(os.environ["LSR_CACHE_DIR"])
    if previous is None:
        os.environ.pop("LSR_CACHE_DIR", None)
    else:
        os.environ["LSR_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def encoder():
    from lsr.encoders.splade import SpladeEncoder

    return SpladeEncoder(batch_size=8)


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    root = data_dir()
    if root is None or not (root / "beir" / "scifact").is_dir():
        pytest.fail("the shared data directory (../shared/data or $LSR_DATA_DIR) is missing")
    return root / "beir" / "scifact"


@pytest.fixture
def scifact_subset(tmp_path: Path, scifact_dir: Path) -> Path:
    """A BEIR folder: the first 200 SciFact docs, and the test queries judged on them."""
    folder = tmp_path / "scifact-200"
    (folder / "qrels").mkdir(parents=True)
    with gzip.open(scifact_dir / "corpus.jsonl.gz", "rt") as source:
        lines = [next(source) for _ in range(200)]
    (folder / "corpus.jsonl").write_text("".join(lines))
    doc_ids = {json.loads(line)["_id"] for line in lines}
    qrels = [row.split("\t") for row in (scifact_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    kept = [row for row in qrels if row[1] in doc_ids]
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in kept)
    )
    query_ids = {row[0] for row in kept}
    with gzip.open(scifact_dir / "queries.jsonl.gz", "rt") as source:
        queries = [line for line in source if json.loads(line)["_id"] in query_ids]
    (folder / "queries.jsonl").write_text("".join(queries))
    return folder


@pytest.fixture(scope="session")
def served_index_template(tmp_path_factory, encoder, scifact_dir: Path) -> Path:
    """A real index of the first 200 SciFact docs, sparse (bundled SPLADE) and dense (bundled
    MiniLM), with texts; built once. Tests that write copy it (`served_index`)."""
    from lsr.data.loaders import Document
    from lsr.encoders.dense import DenseEncoder
    from lsr.indexing import index_corpus

    with gzip.open(scifact_dir / "corpus.jsonl.gz", "rt") as source:
        rows = [json.loads(next(source)) for _ in range(200)]
    documents = [Document(r["_id"], r.get("title", ""), r["text"]) for r in rows]
    out = tmp_path_factory.mktemp("served") / "index"
    index_corpus(documents, encoder, out, "scifact-200", show_progress=False,
                 dense_encoder=DenseEncoder(batch_size=16), block_size=8)
    return out


@pytest.fixture
def served_index(tmp_path: Path, served_index_template: Path) -> Path:
    import shutil

    target = tmp_path / "index"
    shutil.copytree(served_index_template, target)
    return target


# A real local Ray (two CPUs) and a 1,000-document index built on it, shared by the Ray tests.

RAY_DOC_MAX_LENGTH = 32  # short documents keep the 1,000-document jobs quick on two CPUs
# One fixed global scale: shards and one index then quantise every weight alike, so a sharded
# search can be compared score for score with one index over the same documents.
RAY_FIXED_SCALE = 0.02
RAY_BLOCK_DOCS = 500  # two blocks: one for each encoder actor


@pytest.fixture(scope="session")
def ray_cluster():
    from lsr.scaleout.ray_indexing import start_ray

    ray = start_ray(num_cpus=2)  # as the jobs and `lsr serve --ray` start it
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def corpus_1000(tmp_path_factory, scifact_dir):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with gzip.open(scifact_dir / "corpus.jsonl.gz", "rt") as source:
        path.write_text("".join(next(source) for _ in range(1000)))
    return path


@pytest.fixture(scope="session")
def short_encoder():
    from lsr.encoders.loading import load_encoder

    return load_encoder(None, doc_max_length=RAY_DOC_MAX_LENGTH)


def ray_build_options() -> dict:
    return {"quantization": "global", "scale": RAY_FIXED_SCALE, "reorder": "bp", "block_size": 8,
            "store_texts": True}


@pytest.fixture(scope="session")
def ray_index_1000(tmp_path_factory, ray_cluster, corpus_1000, short_encoder):
    """The Ray job's index of the corpus: two encoder actors, two shards, sparse and dense;
    ``(path, what the job reported, its progress lines)``."""
    from lsr.index.dense import DenseOptions
    from lsr.index.writer import index_settings
    from lsr.data.blocks import CorpusBlocks
    from lsr.encoders.dense import DenseEncoder
    from lsr.scaleout.block_indexer import EncoderSpec
    from lsr.scaleout.ray_indexing import ray_index

    dense = DenseEncoder(max_length=RAY_DOC_MAX_LENGTH)
    meta = {"encoder": short_encoder.describe(), "corpus": str(corpus_1000), "dense_encoder": dense.describe()}
    settings = index_settings(short_encoder.vocab_size, meta,
                              {"model": dense.model_name, "dim": dense.dim, "options": DenseOptions()},
                              **ray_build_options())
    out = tmp_path_factory.mktemp("ray-index") / "ix"
    lines = []
    done = ray_index(CorpusBlocks.open(str(corpus_1000), RAY_BLOCK_DOCS), out, 2, settings,
                     EncoderSpec(None, doc_max_length=RAY_DOC_MAX_LENGTH, dense=True,
                                                 dense_max_length=RAY_DOC_MAX_LENGTH), actors=2,
                     report=lines.append)
    return out, done, lines


@pytest.fixture(scope="session")
def single_index_1000(tmp_path_factory, corpus_1000, short_encoder):
    """One index (not sharded) of the same corpus by the one-process job, encoding in the
    Ray job's blocks (the same documents share a batch, so the vectors are the same)."""
    from lsr.index.dense import DenseOptions
    from lsr.data.loaders import iter_corpus
    from lsr.encoders.dense import DenseEncoder
    from lsr.indexing import index_corpus

    out = tmp_path_factory.mktemp("single-index") / "ix"
    index_corpus(iter_corpus(corpus_1000), short_encoder, out, str(corpus_1000), show_progress=False,
                 dense_encoder=DenseEncoder(max_length=RAY_DOC_MAX_LENGTH), dense_options=DenseOptions(), chunk_docs=RAY_BLOCK_DOCS,
                 **ray_build_options())
    return out
