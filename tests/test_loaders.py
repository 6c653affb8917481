import gzip
import json

import pytest

from lsr.data.datasets import UnknownDatasetError, beir_folder, resolve_dataset
from lsr.data.loaders import DataFormatError, chunked, iter_corpus, load_qrels, load_queries


def write(path, text):
    path.write_text(text)
    return path


def test_corpus_accepts_id_and_underscore_id_and_optional_title(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"_id": "a", "title": "T", "text": "x"}\n\n{"id": 7, "text": "y"}\n')
    docs = list(iter_corpus(path))
    assert [(d.doc_id, d.title, d.text) for d in docs] == [("a", "T", "x"), ("7", "", "y")]
    assert docs[0].full_text() == "T x" and docs[1].full_text() == "y"


def test_gzip_corpus(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt") as out:
        out.write(json.dumps({"_id": "1", "text": "hello"}) + "\n")
    assert [d.doc_id for d in iter_corpus(path)] == ["1"]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"_id": "a", "text": ', "c.jsonl:2: invalid JSON"),
        ('{"title": "t", "text": "x"}', "c.jsonl:2: missing field '_id'"),
        ('{"_id": "b"}', "c.jsonl:2: missing field 'text'"),
        ('{"_id": "b", "text": 3}', "c.jsonl:2: field 'text' must be a string"),
        ('{"_id": "", "text": "x"}', "c.jsonl:2: field '_id' must be a non-empty string"),
        ('["_id", "text"]', "c.jsonl:2: expected a JSON object"),
    ],
)
def test_malformed_corpus_names_file_line_and_problem(tmp_path, line, message):
    path = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "ok"}\n' + line + "\n")
    with pytest.raises(DataFormatError, match=message):
        list(iter_corpus(path))


def test_truncated_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"_id": "a", "text": "x"}\n' * 1000)[:60])
    with pytest.raises(DataFormatError, match="c.jsonl.gz: unreadable"):
        list(iter_corpus(path))


def test_queries_jsonl_and_tsv(tmp_path):
    jsonl = write(tmp_path / "q.jsonl", '{"_id": "1", "text": "a b"}\n')
    tsv = write(tmp_path / "q.tsv", "1\ta b\n2\tc\n")
    assert load_queries(jsonl) == {"1": "a b"}
    assert load_queries(tsv) == {"1": "a b", "2": "c"}
    bad = write(tmp_path / "bad.tsv", "1\ta\tb\n")
    with pytest.raises(DataFormatError, match="bad.tsv:1: expected 'id<TAB>text'"):
        load_queries(bad)


def test_qrels_beir_and_trec(tmp_path):
    beir = write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\n")
    trec = write(tmp_path / "qrels.txt", "q1 0 d1 1\n")
    assert load_qrels(beir) == {"q1": {"d1": 1, "d2": 2}}
    assert load_qrels(trec) == {"q1": {"d1": 1}}
    bad = write(tmp_path / "bad.tsv", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(DataFormatError, match="bad.tsv:2: relevance 'high' is not an integer"):
        load_qrels(bad)


def test_chunked_streams_in_order():
    assert list(chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_dataset_id_resolves_to_local_copy(scifact_dir):
    dataset = resolve_dataset("beir/scifact/test")
    assert dataset.corpus_path is not None and dataset.corpus_path.parent == scifact_dir
    qrels = dataset.qrels()
    assert len(qrels) == 300 and sum(len(v) for v in qrels.values()) == 339
    first = next(dataset.iter_documents())
    assert first.doc_id and first.text


def test_data_dir_is_configurable(tmp_path, monkeypatch, scifact_dir):
    monkeypatch.setenv("LSR_DATA_DIR", str(tmp_path))
    dataset = resolve_dataset("beir/scifact/test")
    assert dataset.corpus_path is None and dataset.ir_datasets_id == "beir/scifact/test"


def test_unknown_dataset_lists_local_ids():
    with pytest.raises(UnknownDatasetError, match="local ids: .*beir/nfcorpus/test.*beir/scifact/test"):
        resolve_dataset("beir/not-a-dataset/test")


def test_a_beir_id_without_split_is_its_local_test_split(scifact_dir):
    for name in ("beir/scifact", "beir/scifact/"):
        dataset = resolve_dataset(name)
        assert dataset.name == "beir/scifact/test" and dataset.corpus_path.parent == scifact_dir


def test_an_unreachable_dataset_is_one_line(tmp_path):
    """The real command and the real ir_datasets, with the network made unreachable (a proxy on
    a closed local port): one error line listing the local ids, nothing written, exit 1."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "IR_DATASETS_HOME": str(tmp_path / "ird"), "LSR_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "lsr.cli", "index", "beir/fiqa/test", "--out", str(tmp_path / "ix")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "'beir/fiqa/test' is not in the local data directory" in lines[0]
    assert "local ids: beir/nfcorpus/dev" in lines[0] and "beir/scifact/test" in lines[0]
    assert not (tmp_path / "ix").exists()
    assert (tmp_path / "cache" / "logs" / "ir_datasets.log").stat().st_size > 0  # its chatter went there


def test_beir_folder_needs_a_corpus(tmp_path):
    with pytest.raises(UnknownDatasetError, match="no corpus.jsonl"):
        beir_folder(tmp_path)


def test_ids_without_a_local_copy_go_to_ir_datasets(monkeypatch, tmp_path):
    """Stands beside the real local-copy tests: ir_datasets would download here, so its loader
    is replaced by an object with the same three iterators."""
    from types import SimpleNamespace

    import lsr.data.datasets as datasets

    fake = SimpleNamespace(
        docs_iter=lambda: iter([SimpleNamespace(doc_id="d1", title="T", text="x"),
                                SimpleNamespace(doc_id="d2", text="y")]),
        queries_iter=lambda: iter([SimpleNamespace(query_id="q1", text="x?")]),
        qrels_iter=lambda: iter([SimpleNamespace(query_id="q1", doc_id="d1", relevance=2)]),
    )
    monkeypatch.setenv("LSR_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "_ir_datasets_load", lambda name: fake)
    dataset = resolve_dataset("beir/nfcorpus/test")
    assert [tuple(d) for d in dataset.iter_documents()] == [("d1", "T", "x"), ("d2", "", "y")]
    assert dataset.queries() == {"q1": "x?"} and dataset.qrels() == {"q1": {"d1": 2}}
