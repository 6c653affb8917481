"""ONNX export with the pooling inside the graph: token ids in, the sparse vocabulary vector out.

The graph's output is the dense ``(batch, vocab)`` weight vector that `SparseBatch` rows are
cut from (zeros where a term is absent). For an inference-free model the graph is its
document encoder; its query side is a weight table, saved beside the graph with the model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

OPSET = 18  # ScatterElements with reduction="max" (uniCOIL's pooling) needs 18
SAMPLE_TEXTS = ["A sample document about vitamin D and bone density.", "short text"]


def graph_module(encoder) -> torch.nn.Module:
    """The ``nn.Module`` mapping (input_ids, attention_mask) to (batch, vocab) weights."""
    module = encoder.module
    return module.document if hasattr(module, "document") else module


def export_onnx(encoder, path: str | Path, max_length: int | None = None) -> Path:
    """Write ``path`` (an ``.onnx`` file) with dynamic batch and sequence axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = graph_module(encoder).eval()
    tokens = encoder.tokenizer(SAMPLE_TEXTS, padding=True, truncation=True,
                               max_length=max_length or encoder.doc_max_length, return_tensors="pt")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {0: batch, 1: sequence}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # notes on axis names shared by both inputs
        # torch.export's exporter (the supported one; the TorchScript exporter is deprecated).
        torch.onnx.export(
            module, (tokens["input_ids"], tokens["attention_mask"]), str(path),
            input_names=["input_ids", "attention_mask"], output_names=["sparse_vector"],
            dynamic_shapes=(axes, axes), opset_version=OPSET, dynamo=True, verbose=False,
        )
    return path


def onnx_max_difference(encoder, path: str | Path, texts: list[str]) -> float:
    """Largest absolute difference between the ONNX graph (onnxruntime) and PyTorch on ``texts``."""
    import onnxruntime

    tokens = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.doc_max_length,
                               return_tensors="pt")
    with torch.no_grad():
        expected = graph_module(encoder)(tokens["input_ids"], tokens["attention_mask"]).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input_ids": tokens["input_ids"].numpy(),
                                "attention_mask": tokens["attention_mask"].numpy()})
    return float(np.abs(got - expected).max())
