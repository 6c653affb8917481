"""Shared fixtures: the bundled encoder (loaded once) and a small real BEIR subset."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lsr.data.datasets import data_dir


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
