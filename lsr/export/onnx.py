"""ONNX export with the pooling inside the graph: token ids in, the sparse vocabulary vector out
(and, for the dense side of hybrid search, the normalised dense vector out).

The graph's output is the dense ``(batch, vocab)`` weight vector that `SparseBatch` rows are
cut from (zeros where a term is absent). For an inference-free model the graph is its
document encoder; its query side is a weight table, saved beside the graph with the model.
"""

from __future__ import annotations

import logging
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
    _export(module, tokens, path, "sparse_vector")
    return path


class SpladeQueryGraph(torch.nn.Module):
    """SPLADE max pooling as a query graph: one vocabulary product, the max over tokens, then the
    bias and ``log(1 + relu)`` on the ``(batch, vocab)`` maxima (equal values: the activation is
    monotone, and rounding is monotone so the bias may follow the max, see `lsr.encoders.pooling`).

    `export_onnx`'s graph projects in vocabulary chunks to bound the memory of long documents;
    that costs about 150 small nodes, which a batch of one short query pays for in per-node
    overhead. A query's ``(tokens, vocab)`` logits are a few MB, so one product is cheaper here.
    """

    def __init__(self, module) -> None:
        super().__init__()
        self.mlm, self.decoder = module.mlm, module.decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits  # decoder taken out
        # Padding takes the first token's hidden state (a real token, [CLS], on the right-padded
        # rows of a tokenizer): its logits then repeat a real token's and leave the max as it is,
        # and the mask touches (tokens, hidden) values instead of (tokens, vocab) logits.
        real = attention_mask.unsqueeze(-1) != 0
        hidden = torch.where(real, hidden, hidden[:, :1])
        maxima = (hidden @ self.decoder.weight.T).amax(dim=1)  # (batch, tokens, vocab) -> (batch, vocab)
        if self.decoder.bias is not None:
            maxima = maxima + self.decoder.bias
        return torch.log1p(torch.relu(maxima))


def export_query_onnx(encoder, path: str | Path) -> Path:
    """The query graph of a SPLADE or uniCOIL encoder (`SpladeQueryGraph` for SPLADE max pooling,
    the model's own graph otherwise), for `lsr.encoders.onnx_queries`."""
    from lsr.encoders.splade import SpladeModule

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = graph_module(encoder)
    if isinstance(module, SpladeModule) and module.pooling == "max":
        module = SpladeQueryGraph(module)
    tokens = encoder.tokenizer(SAMPLE_TEXTS, padding=True, truncation=True, max_length=encoder.query_max_length,
                               return_tensors="pt")
    _export(module.eval(), tokens, path, "sparse_vector")
    return path


def _export(module: torch.nn.Module, tokens, path: Path, output_name: str) -> None:
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {0: batch, 1: sequence}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed": we export no vision operators
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # notes on axis names shared by both inputs
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations, not ours to fix
            # torch.export's exporter (the supported one; the TorchScript exporter is deprecated).
            torch.onnx.export(
                module, (tokens["input_ids"], tokens["attention_mask"]), str(path),
                input_names=["input_ids", "attention_mask"], output_names=[output_name],
                dynamic_shapes=(axes, axes), opset_version=OPSET, dynamo=True, verbose=False,
                external_data=False,  # one file (the weights inside): renamed into place whole, moved whole
            )
    finally:
        exporter_log.setLevel(level)


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


class DenseQueryGraph(torch.nn.Module):
    """A sentence-transformers model as one module: token ids in, the unit vector out
    (mean or CLS pooling, then L2 normalisation, as `DenseEncoder` asks for)."""

    def __init__(self, sentence_transformer) -> None:
        super().__init__()
        modes = {type(module).__name__: module for module in sentence_transformer}
        pooling = getattr(modes.get("Pooling"), "pooling_mode", None)
        if pooling not in ("mean", "cls") or set(modes) - {"Transformer", "Pooling", "Normalize"}:
            raise ValueError(f"cannot export {list(modes)} with pooling {pooling!r} to ONNX (only a transformer "
                             "with mean or CLS pooling); use --query-backend torch")
        self.transformer = modes["Transformer"].auto_model
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def export_dense_onnx(dense_encoder, path: str | Path) -> Path:
    """Write the dense encoder's graph (``(batch, dim)`` unit vectors) with dynamic axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = DenseQueryGraph(dense_encoder.model).eval()
    tokens = dense_encoder.model.tokenizer(SAMPLE_TEXTS, padding=True, truncation=True,
                                           max_length=dense_encoder.max_length, return_tensors="pt")
    _export(module, tokens, path, "dense_vector")
    return path
