"""Inference-free (document-only) sparse retrieval: SPLADE documents, tokenised queries.

A query costs no model inference: it is tokenised (no special tokens) and each distinct word
piece gets a static weight, its IDF over the indexed corpus or a weight learned in training.
Saved in sentence-transformers' Router layout: the query weights in ``QUERY_DIR`` and the
document masked LM (a plain Hugging Face directory) in ``DOCUMENT_DIR``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lsr.index.sparse_batch import SparseBatch
from lsr.data.loaders import chunked
from lsr.encoders.batching import special_token_ids
from lsr.encoders.config_file import write_encoder_config
from lsr.encoders.splade import SpladeEncoder, SpladeModule
from lsr.encoders.st_format import DOCUMENT_DIR, QUERY_DIR, write_inference_free_files
from lsr.encoders.tokens import tokenize, word_piece_ids


def compute_idf(texts: Iterable[str], tokenizer, max_length: int = 512, batch_size: int = 256) -> np.ndarray:
    """BM25's IDF per vocabulary id, ``log(1 + (N - df + 0.5) / (df + 0.5))``; special tokens 0.

    Args:
        texts: the corpus (document frequency counts a word piece once per text).
        tokenizer: the model's tokenizer.
        max_length: tokens read per text (the document encoder's limit).
    """
    df = np.zeros(len(tokenizer), dtype=np.int64)
    total = 0
    for chunk in chunked(texts, batch_size):
        for ids in tokenize(tokenizer, chunk, add_special_tokens=False, truncation=True,
                            max_length=max_length)["input_ids"]:
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
        total += len(chunk)
    if total == 0:
        raise ValueError("compute_idf: the corpus is empty")
    idf = np.log1p((total - df + 0.5) / (df + 0.5)).astype(np.float32)
    idf[special_token_ids(tokenizer)] = 0.0
    return idf


class InferenceFreeModule(nn.Module):
    """SPLADE document encoder plus a weight per vocabulary id for queries.

    Args:
        document: the document `SpladeModule`.
        query_weights: ``(vocab,)`` initial query weights (IDF).
        learn_query_weights: train the query weights (Li-LSR style) instead of keeping them fixed.
    """

    def __init__(self, document: SpladeModule, query_weights: torch.Tensor, learn_query_weights: bool = False) -> None:
        super().__init__()
        self.document = document
        self.vocab_size = document.vocab_size
        weights = torch.as_tensor(query_weights, dtype=torch.float32).clone()
        if learn_query_weights:
            self.query_weights = nn.Parameter(weights)
        else:
            self.register_buffer("query_weights", weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.document(input_ids, attention_mask)  # documents: (batch, vocab)

    def encode_query_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) token presence times the (non-negative) query weights."""
        presence = torch.zeros(input_ids.shape[0], self.vocab_size, dtype=self.query_weights.dtype,
                               device=input_ids.device)
        presence.scatter_(1, input_ids, attention_mask.to(presence.dtype))
        return presence * torch.relu(self.query_weights)


class InferenceFreeEncoder:
    """Encodes documents with SPLADE and queries by tokenisation and a table lookup."""

    def __init__(self, module: InferenceFreeModule, tokenizer, model_name: str, query_max_length: int = 64,
                 doc_max_length: int = 256, batch_size: int = 32, device: str = "cpu",
                 query_weighting: str = "idf") -> None:
        self.module = module.to(device).eval()
        self.documents = SpladeEncoder(model_name, query_max_length, doc_max_length, batch_size,
                                       device=device, module=module.document, tokenizer=tokenizer)
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.vocab_size = module.vocab_size
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.query_weighting = query_weighting
        self._table, self._table_of = None, None  # `_lookup_table`'s cache and the weights it was made from

    @classmethod
    def from_base(cls, base: str | None, idf: np.ndarray, learn_query_weights: bool = False,
                  pooling: str = "max", **options) -> "InferenceFreeEncoder":
        """A new model: the document side from the masked LM ``base``, queries weighted by ``idf``."""
        from transformers import AutoTokenizer

        from lsr.encoders.models import DEFAULT_MODEL, resolve_model

        document = SpladeModule.from_pretrained(base, pooling)
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(base))
        module = InferenceFreeModule(document, torch.from_numpy(idf), learn_query_weights)
        weighting = "learned" if learn_query_weights else "idf"
        return cls(module, tokenizer, base or DEFAULT_MODEL, query_weighting=weighting, **options)

    @classmethod
    def from_corpus(cls, base: str | None, texts: Iterable[str], learn_query_weights: bool = False,
                    pooling: str = "max", **options) -> "InferenceFreeEncoder":
        """A new model whose query weights start as the IDF of ``texts`` (the corpus it indexes)."""
        from transformers import AutoTokenizer

        from lsr.encoders.models import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(base))
        idf = compute_idf(texts, tokenizer, options.get("doc_max_length", 256))
        return cls.from_base(base, idf, learn_query_weights, pooling, **options)

    @classmethod
    def load(cls, directory: str | Path, settings: dict, **options) -> "InferenceFreeEncoder":
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        directory = Path(directory)
        document = SpladeModule.from_pretrained(str(directory / DOCUMENT_DIR), settings.get("pooling", "max"))
        weights = load_file(str(directory / QUERY_DIR / "model.safetensors"))["weight"]
        tokenizer = AutoTokenizer.from_pretrained(directory / DOCUMENT_DIR)
        module = InferenceFreeModule(document, weights)
        return cls(module, tokenizer, str(directory), settings["query_max_length"], settings["doc_max_length"],
                   query_weighting=settings.get("query_weighting", "idf"), **options)

    def set_idf(self, texts: Iterable[str]) -> None:
        """Re-derive the IDF query weights from another corpus (the one about to be indexed)."""
        if self.query_weighting != "idf":
            raise ValueError("only a model with IDF query weights can take a corpus' IDF; this one learned its own")
        idf = compute_idf(texts, self.tokenizer, self.doc_max_length)
        with torch.no_grad():
            self.module.query_weights.copy_(torch.from_numpy(idf))

    def describe(self) -> dict:
        return {"type": "inference-free", "model": self.model_name, "tokenizer": self.tokenizer.name_or_path,
                "pooling": self.module.document.pooling, "query_weighting": self.query_weighting,
                "query_max_length": self.query_max_length, "doc_max_length": self.doc_max_length}

    def encode_documents(self, texts: list[str], show_progress: bool = False) -> SparseBatch:
        return self.documents.encode_documents(texts, show_progress)

    def encode_queries(self, texts: list[str], show_progress: bool = False) -> SparseBatch:
        """Tokenise (no special tokens) and look each distinct word piece's weight up."""
        weights = self._lookup_table()
        token_ids = word_piece_ids(self.tokenizer, list(texts), self.query_max_length) if texts else []
        # Plain Python over a query's dozen ids: each numpy call costs about a microsecond of
        # overhead, and a dozen of them were half of a 0.12 ms query.
        indptr, indices, values = [0], [], []
        for ids in token_ids:
            for term in sorted(set(ids)):
                weight = weights[term]
                if weight > 0:
                    indices.append(term)
                    values.append(weight)
            indptr.append(len(indices))
        return SparseBatch(np.array(indptr, dtype=np.int64), np.array(indices, dtype=np.uint32),
                           np.array(values, dtype=np.float32), self.vocab_size)

    def _lookup_table(self) -> list[float]:
        """The non-negative query weights as a Python list (float32 values, exactly), made again
        only when the weights changed (a training step, `set_idf` or a load bumps the tensor's
        version): a query then costs a tokenisation and a lookup, not a pass over the vocabulary."""
        weights = self.module.query_weights
        key = (weights.data_ptr(), weights._version)
        if self._table_of != key:
            self._table = torch.relu(weights.detach()).float().cpu().numpy().tolist()
            self._table_of = key
        return self._table

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        document_dir = directory / DOCUMENT_DIR
        document_dir.mkdir(parents=True, exist_ok=True)
        self.module.document.save_pretrained(document_dir)
        self.tokenizer.save_pretrained(document_dir)
        (directory / QUERY_DIR).mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory / QUERY_DIR)
        weights = torch.relu(self.module.query_weights.detach()).float().contiguous().cpu()
        save_file({"weight": weights}, str(directory / QUERY_DIR / "model.safetensors"))
        write_encoder_config(directory, {"type": "inference-free", "pooling": self.module.document.pooling,
                                         "query_weighting": self.query_weighting,
                                         "query_max_length": self.query_max_length,
                                         "doc_max_length": self.doc_max_length})
        write_inference_free_files(directory, self.module.document.pooling, self.doc_max_length)
