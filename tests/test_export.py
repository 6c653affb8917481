"""Saved models: save-then-load equality for the three encoder types, ONNX graphs equal to
PyTorch within 1e-4, and sentence-transformers' SparseEncoder reading our directories."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = ["Vitamin D deficiency is associated with lower bone mineral density.",
         "short query about cells", "The quick brown fox jumps over the lazy dog " * 12]


def dense(batch) -> np.ndarray:
    return batch.to_scipy().toarray()


@pytest.fixture(scope="module")
def encoders(encoder):
    """One encoder of each type, from the bundled model (uniCOIL's head is fresh)."""
    from lsr.encoders.inference_free import InferenceFreeEncoder, compute_idf
    from lsr.encoders.unicoil import UniCoilEncoder

    idf = compute_idf(TEXTS * 2 + ["unrelated words here"], encoder.tokenizer)
    return {"splade": encoder, "unicoil": UniCoilEncoder.from_base(None),
            "inference-free": InferenceFreeEncoder.from_base(None, idf)}


@pytest.mark.parametrize("kind", ["splade", "unicoil", "inference-free"])
def test_save_then_load_gives_the_same_vectors(encoders, kind, tmp_path):
    from lsr.encoders.loading import load_encoder

    original = encoders[kind]
    original.save(tmp_path / kind)
    loaded = load_encoder(str(tmp_path / kind))
    assert loaded.describe()["type"] == kind
    for encode in ("encode_queries", "encode_documents"):
        np.testing.assert_allclose(dense(getattr(loaded, encode)(TEXTS)), dense(getattr(original, encode)(TEXTS)),
                                   atol=1e-6)


@pytest.mark.parametrize("kind", ["splade", "unicoil", "inference-free"])
def test_onnx_graph_equals_pytorch(encoders, kind, tmp_path):
    import onnxruntime  # noqa: F401 (a dev dependency: missing, the test fails)
    from lsr.export.onnx import export_onnx, onnx_max_difference

    path = export_onnx(encoders[kind], tmp_path / "model.onnx")
    # Other batch sizes and lengths than the export sample: the axes are dynamic.
    assert onnx_max_difference(encoders[kind], path, TEXTS) < 1e-4
    assert onnx_max_difference(encoders[kind], path, TEXTS[:1]) < 1e-4


@pytest.mark.parametrize("kind", ["splade", "inference-free"])
def test_sentence_transformers_loads_our_directory_with_the_same_vectors(encoders, kind, tmp_path):
    import sentence_transformers
    encoders[kind].save(tmp_path / kind)
    theirs = sentence_transformers.SparseEncoder(str(tmp_path / kind), device="cpu")
    ours = encoders[kind]
    documents = theirs.encode_document(TEXTS[:2], convert_to_tensor=True).to_dense().numpy()
    queries = theirs.encode_query(TEXTS[:2], convert_to_tensor=True).to_dense().numpy()
    np.testing.assert_allclose(documents, dense(ours.encode_documents(TEXTS[:2])), atol=1e-5)
    np.testing.assert_allclose(queries, dense(ours.encode_queries(TEXTS[:2])), atol=1e-5)


def test_inference_free_queries_are_idf_lookups(encoders):
    model = encoders["inference-free"]
    queries = model.encode_queries(["vitamin vitamin bone"])
    token_ids = set(model.tokenizer("vitamin bone", add_special_tokens=False)["input_ids"])
    assert set(queries.indices.tolist()) == token_ids  # each word piece once, no [CLS]/[SEP]
    weights = model.module.query_weights.numpy()
    np.testing.assert_allclose(queries.values, weights[queries.indices])


def test_export_command_writes_a_loadable_model_and_refuses_a_full_directory(encoders, tmp_path):
    from lsr.cli import main
    from lsr.encoders.loading import load_encoder

    encoders["inference-free"].save(tmp_path / "model")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "bone bone"}\n{"_id": "b", "text": "cells"}\n')
    assert main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--onnx",
                 "--idf-corpus", str(corpus)]) == 0
    exported = load_encoder(str(tmp_path / "out"))
    assert (tmp_path / "out" / "model.onnx").is_file()
    bone = exported.tokenizer("bone", add_special_tokens=False)["input_ids"][0]
    # IDF over the two-document corpus: log(1 + (2 - 1 + 0.5) / (1 + 0.5)) = log 2.
    assert exported.module.query_weights[bone].item() == pytest.approx(np.log(2.0), rel=1e-5)
    assert main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "out")]) == 1
