"""The sentence-transformers files that make our saved models load in its ``SparseEncoder``.

Only small JSON files: the weights and tokenizer are the Hugging Face files we save anyway.
A SPLADE model is ``Transformer(fill-mask) -> SpladePooling``; an inference-free model is a
``Router`` whose query route is ``SparseStaticEmbedding`` (token presence times a weight per
vocabulary id) and whose document route is the SPLADE pair, each in its own subfolder.
"""

from __future__ import annotations

import json
from pathlib import Path

TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
SPLADE_POOLING = "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"
STATIC_EMBEDDING = "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding"
ROUTER = "sentence_transformers.base.modules.router.Router"
QUERY_DIR = "query_0_SparseStaticEmbedding"
DOCUMENT_DIR = "document_0_MLMTransformer"
POOLING_DIR = "document_1_SpladePooling"


def _write(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _transformer_config(directory: Path, max_seq_length: int) -> None:
    _write(directory / "sentence_bert_config.json", {
        "transformer_task": "fill-mask",
        "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
        "module_output_name": "token_embeddings",
        "max_seq_length": max_seq_length,
    })


def _pooling_config(directory: Path, pooling: str) -> None:
    _write(directory / "config.json", {"pooling_strategy": pooling, "activation_function": "relu",
                                       "embedding_dimension": None})


def _model_config(directory: Path) -> None:
    _write(directory / "config_sentence_transformers.json", {
        "model_type": "SparseEncoder", "prompts": {"query": "", "document": ""},
        "default_prompt_name": None, "similarity_fn_name": "dot",
    })


def write_splade_files(directory: str | Path, pooling: str, max_seq_length: int) -> None:
    """Beside a masked-LM Hugging Face directory: modules.json and the pooling config."""
    directory = Path(directory)
    _transformer_config(directory, max_seq_length)
    _pooling_config(directory / "1_SpladePooling", pooling)
    _write(directory / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
        {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": SPLADE_POOLING},
    ])
    _model_config(directory)


def write_inference_free_files(directory: str | Path, pooling: str, max_seq_length: int) -> None:
    """Router files around ``QUERY_DIR`` (weights + tokenizer) and ``DOCUMENT_DIR`` (masked LM)."""
    directory = Path(directory)
    _transformer_config(directory / DOCUMENT_DIR, max_seq_length)
    _pooling_config(directory / POOLING_DIR, pooling)
    _write(directory / QUERY_DIR / "config.json", {"frozen": True})
    _write(directory / "router_config.json", {
        "types": {QUERY_DIR: STATIC_EMBEDDING, DOCUMENT_DIR: TRANSFORMER, POOLING_DIR: SPLADE_POOLING},
        "structure": {"query": [QUERY_DIR], "document": [DOCUMENT_DIR, POOLING_DIR]},
        "parameters": {"default_route": "document", "allow_empty_key": True, "route_mappings": {}},
    })
    _write(directory / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": ROUTER}])
    _model_config(directory)
