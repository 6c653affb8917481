"""Query encoding through ONNX Runtime (`lsr.encoders.onnx_queries`): the same vectors as
PyTorch within 1e-4 for the sparse and the dense model, graphs found or exported as the backend
says, and a graph that is not the model's is an error, never a wrong vector."""

from __future__ import annotations

import numpy as np
import pytest

QUERIES = ["Vitamin D deficiency and bone density", "cells", "",
           "what is the effect of a long list of words on the query encoder when it is truncated " * 8,
           "β-blockers: do they reduce mortality after myocardial infarction?"]


@pytest.fixture(scope="module")
def dense_encoder():
    from lsr.encoders.dense import DenseEncoder

    return DenseEncoder(batch_size=4)


@pytest.fixture(scope="module")
def onnx_encoders(encoder, dense_encoder):
    """Both graphs exported once into this session's cache (`private_graph_cache`)."""
    import onnxruntime  # noqa: F401 (a dev dependency: missing, the test fails)

    from lsr.encoders.onnx_queries import with_dense_query_backend, with_sparse_query_backend

    return with_sparse_query_backend(encoder, "onnx", threads=1), with_dense_query_backend(dense_encoder, "onnx", threads=1)


def test_sparse_onnx_queries_equal_pytorch(encoder, onnx_encoders):
    sparse, _ = onnx_encoders
    assert sparse.query_backend == "onnx" and sparse.graph.is_file()
    expected = encoder.encode_queries(QUERIES).to_scipy().toarray()
    for batch in (QUERIES, QUERIES[:1], QUERIES[3:4]):  # batches, one query, a truncated one
        got = sparse.encode_queries(batch).to_scipy().toarray()
        rows = [QUERIES.index(q) for q in batch]
        assert np.abs(got - expected[rows]).max() < 1e-4
    assert len(sparse.encode_queries([])) == 0
    # Documents still go through PyTorch: the wrapper hands them to the model.
    document = encoder.encode_documents(QUERIES[:2])
    np.testing.assert_array_equal(sparse.encode_documents(QUERIES[:2]).values, document.values)


def test_dense_onnx_queries_equal_pytorch(dense_encoder, onnx_encoders):
    _, dense = onnx_encoders
    assert dense.query_backend == "onnx"
    expected = dense_encoder.encode(QUERIES)
    assert np.abs(dense.encode_queries(QUERIES) - expected).max() < 1e-4
    assert np.abs(dense.encode_queries(QUERIES[1:2]) - expected[1:2]).max() < 1e-4
    assert dense.encode_queries([]).shape == (0, dense_encoder.dim)


def test_auto_uses_a_graph_only_where_one_is_present(encoder, onnx_encoders, monkeypatch, tmp_path):
    from lsr.encoders.onnx_queries import with_sparse_query_backend

    assert with_sparse_query_backend(encoder, "auto").query_backend == "onnx"  # the module's export is cached
    monkeypatch.setenv("LSR_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert with_sparse_query_backend(encoder, "auto") is encoder  # none there: PyTorch, nothing exported
    assert not (tmp_path / "empty-cache").exists()
    assert with_sparse_query_backend(encoder, "torch") is encoder
    with pytest.raises(ValueError, match="query backend must be one of"):
        with_sparse_query_backend(encoder, "tensorrt")


def test_a_graph_of_another_model_or_a_damaged_graph_is_an_error(encoder, onnx_encoders, monkeypatch, tmp_path):
    from lsr.encoders.onnx_queries import GRAPH_NAME, with_sparse_query_backend

    sparse, dense = onnx_encoders
    # The dense model's graph where the sparse one belongs: it runs, and gives other vectors.
    sparse.graph.with_name("saved.onnx").write_bytes(sparse.graph.read_bytes())
    sparse.graph.write_bytes(dense.graph.read_bytes())
    try:
        with pytest.raises(ValueError, match=r"query.onnx: the ONNX graph gives \(384,\) vectors, the model \(30522,\)"):
            with_sparse_query_backend(encoder, "onnx")
        int8 = sparse.graph.with_name("query.int8.onnx")
        int8.write_bytes(dense.graph.read_bytes())  # int8 vectors are not compared, their shape is
        with pytest.raises(ValueError, match=r"query.int8.onnx: the ONNX graph gives \(384,\) vectors"):
            with_sparse_query_backend(encoder, "onnx-int8")
        int8.unlink()
        sparse.graph.write_bytes(b"\x08\x01 not a protobuf of a graph")
        with pytest.raises(ValueError, match=f"{GRAPH_NAME}: not a readable ONNX graph"):
            with_sparse_query_backend(encoder, "auto")
    finally:
        sparse.graph.write_bytes(sparse.graph.with_name("saved.onnx").read_bytes())
    assert with_sparse_query_backend(encoder, "auto").query_backend == "onnx"


def test_int8_graph_is_close_to_pytorch_and_inference_free_needs_no_graph(encoder, onnx_encoders):
    from lsr.encoders.inference_free import InferenceFreeEncoder, compute_idf
    from lsr.encoders.onnx_queries import with_sparse_query_backend

    quantized = with_sparse_query_backend(encoder, "onnx-int8", threads=1)
    assert quantized.query_backend == "onnx-int8" and quantized.graph.name == "query.int8.onnx"
    expected = encoder.encode_queries(QUERIES[:2]).to_scipy().toarray()
    got = quantized.encode_queries(QUERIES[:2]).to_scipy().toarray()
    # Not equal (int8 weights), but the same strongest terms.
    for row in range(2):
        assert set(np.argsort(-got[row])[:5]) & set(np.argsort(-expected[row])[:5])
    model = InferenceFreeEncoder.from_base(None, compute_idf(QUERIES * 2, encoder.tokenizer))
    assert with_sparse_query_backend(model, "onnx") is model


def test_export_command_writes_the_query_graph_that_auto_then_uses(encoder, onnx_encoders, tmp_path, monkeypatch):
    from lsr.cli import main
    from lsr.encoders.loading import load_encoder
    from lsr.encoders.onnx_queries import with_sparse_query_backend

    encoder.save(tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--onnx"]) == 0
    monkeypatch.setenv("LSR_CACHE_DIR", str(tmp_path / "empty-cache"))  # only the graph beside the model
    wrapped = with_sparse_query_backend(load_encoder(str(tmp_path / "out")), "auto")
    assert wrapped.graph == tmp_path / "out" / "query.onnx"
    expected = encoder.encode_queries(QUERIES).to_scipy().toarray()
    assert np.abs(wrapped.encode_queries(QUERIES).to_scipy().toarray() - expected).max() < 1e-4


def test_service_answers_alike_with_onnx_query_encoding(served_index, onnx_encoders):
    from fastapi.testclient import TestClient

    from lsr.service.app import create_app
    from lsr.service.settings import Settings

    answers = {}
    for backend in ("torch", "onnx"):
        settings = Settings(index_dir=served_index, warm_up=False, query_backend=backend)
        with TestClient(create_app(settings)) as client:
            answers[backend] = [client.post("/search", json={"query": "vitamin D and bone", "k": 10, "mode": mode}).json()
                                for mode in ("sparse", "dense", "hybrid")]
    for torch_answer, onnx_answer in zip(answers["torch"], answers["onnx"]):
        assert [hit["id"] for hit in onnx_answer["hits"]] == [hit["id"] for hit in torch_answer["hits"]]
        np.testing.assert_allclose([hit["score"] for hit in onnx_answer["hits"]],
                                   [hit["score"] for hit in torch_answer["hits"]], rtol=1e-4, atol=1e-4)


def test_search_command_ranks_alike_with_either_backend(served_index, onnx_encoders, capsys):
    from lsr.cli import main

    printed = {}
    for backend in ("torch", "onnx"):
        assert main(["search", str(served_index), "vitamin D and bone", "-k", "5", "--query-backend", backend]) == 0
        printed[backend] = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert printed["onnx"] == printed["torch"] and len(printed["onnx"]) == 5
