"""SPLADE: ``w_j = max_i log(1 + relu(logit_ij))`` over the non-padding tokens ``i``.

`SpladeModule` is the trainable ``nn.Module`` (token ids in, ``(batch, vocab)`` weights out);
`SpladeEncoder` wraps it for encoding text into `SparseBatch` rows. Both share the chunked
pooling of `lsr.encoders.pooling`, so training, inference and the ONNX export run one code path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lsr.index.sparse_batch import SparseBatch
from lsr.encoders.batching import encode_texts
from lsr.encoders.config_file import write_encoder_config
from lsr.encoders.windows import model_window
from lsr.encoders.models import DEFAULT_MODEL, resolve_model
from lsr.encoders.pooling import max_pool_by_document, max_pool_through_argmax, splade_pool
from lsr.encoders.st_format import write_splade_files


class SpladeModule(nn.Module):
    """A masked LM whose vocabulary projection is pooled into SPLADE weights.

    The model's own decoder is taken out (replaced by identity) so the model returns the
    transformed hidden states; the decoder weight stays shared (tied to the input
    embeddings, as in BERT) and is applied chunk by chunk in `splade_pool`.

    Args:
        mlm: a Hugging Face ``AutoModelForMaskedLM``.
        pooling: ``"max"`` or ``"sum"``.
        vocab_chunk_size: vocabulary columns projected at once.
    """

    def __init__(self, mlm: nn.Module, pooling: str = "max", vocab_chunk_size: int = 1024) -> None:
        super().__init__()
        if pooling not in ("max", "sum"):
            raise ValueError(f"pooling must be 'max' or 'sum', got {pooling!r}")
        self.decoder = mlm.get_output_embeddings()
        _replace_module(mlm, self.decoder, nn.Identity())
        self.mlm = mlm
        self.pooling = pooling
        self.vocab_chunk_size = vocab_chunk_size
        self.vocab_size = int(self.decoder.weight.shape[0])
        self._columns_of = None  # (storage, version, device, dtype) of the weight `_columns` was made from
        self._columns = None

    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str = "max", vocab_chunk_size: int = 1024) -> "SpladeModule":
        from transformers import AutoModelForMaskedLM
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a weight-loading bar on every start is noise
        return cls(AutoModelForMaskedLM.from_pretrained(resolve_model(name_or_path)), pooling, vocab_chunk_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits  # (batch, seq_len, hidden)
        # On a CPU only: there it is bound by memory (measured); a GPU's many small launches are not measured.
        if self.pooling == "max" and hidden.device.type == "cpu" and not _tracing():
            if torch.is_grad_enabled():  # training: gradients only through each weight's maximising token
                return max_pool_through_argmax(hidden, self.decoder.weight, self.decoder.bias, attention_mask)
            return max_pool_by_document(hidden, self._decoder_columns(), self.decoder.bias, attention_mask)
        return splade_pool(hidden, self.decoder.weight, self.decoder.bias, attention_mask,
                           self.pooling, self.vocab_chunk_size)  # (batch, vocab)

    def _decoder_columns(self) -> torch.Tensor:
        """The decoder weight transposed and contiguous, made again when the weight changed
        (an optimizer step or a loaded state bumps its version)."""
        weight = self.decoder.weight
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        if self._columns_of != key:
            self._columns = weight.detach().T.contiguous()
            self._columns_of = key
        return self._columns

    def save_pretrained(self, directory: str | Path) -> None:
        """Save as a plain masked-LM directory (decoder put back for the duration)."""
        identity = self.mlm.get_output_embeddings()
        _replace_module(self.mlm, identity, self.decoder)
        try:
            self.mlm.save_pretrained(directory)
        finally:
            _replace_module(self.mlm, self.decoder, identity)


class SpladeEncoder:
    """Encodes queries and documents with a SPLADE model.

    Args:
        model_name_or_path: a Hugging Face masked-LM name or directory; the bundled
            SPLADE-tiny by default.
        query_max_length: token limit for queries (special tokens included).
        doc_max_length: token limit for documents.
        batch_size: texts per forward pass.
        pooling: ``"max"`` (SPLADE v2 and later) or ``"sum"`` (SPLADE v1).
        vocab_chunk_size: vocabulary columns projected at once.
        device: torch device.
        module: an already built `SpladeModule` (training hands its model over this way).
        tokenizer: the tokenizer that goes with ``module``.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        query_max_length: int = 64,
        doc_max_length: int = 256,
        batch_size: int = 32,
        pooling: str = "max",
        vocab_chunk_size: int = 1024,
        device: str = "cpu",
        module: SpladeModule | None = None,
        tokenizer=None,
    ) -> None:
        from transformers import AutoTokenizer

        self.model_name = model_name_or_path or DEFAULT_MODEL
        if module is None:
            module = SpladeModule.from_pretrained(self.model_name, pooling, vocab_chunk_size)
        self.module = module.to(device).eval()
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolve_model(self.model_name))
        self.vocab_size = module.vocab_size
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.batch_size = batch_size
        self.pooling = module.pooling
        self.device = device

    def describe(self) -> dict:
        """What to record beside an index or a run."""
        return {
            "type": "splade",
            "model": self.model_name,
            "tokenizer": self.tokenizer.name_or_path,
            "pooling": self.pooling,
            "query_max_length": self.query_max_length,
            "doc_max_length": self.doc_max_length,
        }

    def encode_queries(self, texts: list[str], show_progress: bool = False) -> SparseBatch:
        return self.encode(texts, self.query_max_length, show_progress)

    def encode_documents(self, texts: list[str], show_progress: bool = False) -> SparseBatch:
        """Documents above the model's window are read in overlapping windows (`lsr.encoders.windows`)."""
        return self.encode(texts, self.doc_max_length, show_progress, window=model_window(self.module.mlm.config))

    def encode(self, texts: list[str], max_length: int, show_progress: bool = False, fast: bool = True,
               window: int | None = None) -> SparseBatch:
        """Encode texts in length-sorted batches; rows come back in input order.

        ``fast=False`` builds the full ``(batch, seq_len, vocab)`` activations (the plain
        formula, the oracle of the chunked path); ``window``: see `batching.encode_texts`.
        """
        forward = self._forward if fast else self._forward_plain
        return encode_texts(texts, self.tokenizer, max_length, self.batch_size, forward, self.vocab_size, show_progress,
                            window)

    def _forward(self, tokens) -> torch.Tensor:
        return self.module(tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device))

    def _forward_plain(self, tokens) -> torch.Tensor:
        mask = tokens["attention_mask"].to(self.device)
        hidden = self.module.mlm(input_ids=tokens["input_ids"].to(self.device), attention_mask=mask).logits
        logits = hidden @ self.module.decoder.weight.T  # (batch, seq_len, vocab)
        if self.module.decoder.bias is not None:
            logits = logits + self.module.decoder.bias
        activations = torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1)
        return activations.amax(dim=1) if self.pooling == "max" else activations.sum(dim=1)

    def save(self, directory: str | Path) -> None:
        """A Hugging Face directory, our config and the sentence-transformers files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.module.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        write_encoder_config(directory, {"type": "splade", "pooling": self.pooling,
                                         "query_max_length": self.query_max_length,
                                         "doc_max_length": self.doc_max_length})
        write_splade_files(directory, self.pooling, self.doc_max_length)


def _replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Swap the submodule ``old`` for ``new`` wherever it sits in ``model``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise ValueError("the model's output embeddings are not one of its submodules")


def _tracing() -> bool:
    """Whether the forward pass is being traced into a graph (``lsr export``): the graph keeps
    the batched formula, whose shapes do not depend on each document's length."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
