"""The trainable side of each encoder type: text in, ``(batch, vocab)`` tensors with gradients out.

`TrainableEncoder` hides what differs between SPLADE, uniCOIL and inference-free models
(how queries are encoded, which parameters train, how the model is saved) from the loop.
"""

from __future__ import annotations

import torch

from lsr.encoders.windows import max_by_owner, module_window, padded, split_into_windows
from lsr.training.config import ModelConfig


class TrainableEncoder:
    """Args:
        encoder: the inference encoder (`SpladeEncoder`, `UniCoilEncoder`, `InferenceFreeEncoder`)
            whose ``module`` is trained in place.
        config: the model section of the experiment config.
        device: torch device.
    """

    def __init__(self, encoder, config: ModelConfig, device: str = "cpu") -> None:
        self.encoder = encoder
        self.config = config
        self.device = device
        self.module = encoder.module.to(device)
        self.tokenizer = encoder.tokenizer
        self.inference_free = config.type == "inference-free"
        self.doc_window = module_window(self.module)  # the longest input the model reads

    @property
    def query_weights(self) -> torch.Tensor | None:
        """The inference-free model's IDF (or learned) query weights."""
        return self.module.query_weights if self.inference_free else None

    def _tokens(self, texts: list[str], max_length: int, special: bool = True) -> dict:
        tokens = self.tokenizer(texts, truncation=True, max_length=max_length, padding=True,
                                add_special_tokens=special, return_tensors="pt")
        return {"input_ids": tokens["input_ids"].to(self.device), "attention_mask": tokens["attention_mask"].to(self.device)}

    def encode_queries(self, texts: list[str]) -> torch.Tensor:
        if self.inference_free:  # tokens only, no special tokens (as sentence-transformers' static side)
            tokens = self._tokens(texts, self.config.query_max_length, special=False)
            return self.module.encode_query_tokens(**tokens)
        return self.module(**self._tokens(texts, self.config.query_max_length))

    def encode_documents(self, texts: list[str]) -> torch.Tensor:
        """Above the model's window, overlapping windows max-pooled, as indexing reads them."""
        if self.config.doc_max_length <= self.doc_window:
            return self.module(**self._tokens(texts, self.config.doc_max_length))
        pieces, owner = split_into_windows(self.tokenizer, texts, self.config.doc_max_length, self.doc_window)
        tokens = padded(pieces, self.tokenizer.pad_token_id or 0)
        vectors = self.module(tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device))
        return max_by_owner(vectors, torch.from_numpy(owner), len(texts))

    def save(self, directory) -> None:
        self.encoder.save(directory)


def build_trainable(config: ModelConfig, corpus_texts=None, device: str = "cpu") -> TrainableEncoder:
    """A fresh model from ``config.base``.

    Args:
        config: the model section.
        corpus_texts: texts the inference-free IDF is computed on (needed for that type).
        device: torch device.
    """
    options = {"query_max_length": config.query_max_length, "doc_max_length": config.doc_max_length}
    if config.type == "splade":
        from lsr.encoders.splade import SpladeEncoder

        encoder = SpladeEncoder(config.base, pooling=config.pooling, **options)
    elif config.type == "unicoil":
        from lsr.encoders.unicoil import UniCoilEncoder

        encoder = UniCoilEncoder.from_base(config.base, config.pooling, **options)
    else:
        from lsr.encoders.inference_free import InferenceFreeEncoder

        if corpus_texts is None:
            raise ValueError("an inference-free model needs a corpus to compute its IDF query weights")
        encoder = InferenceFreeEncoder.from_corpus(config.base, corpus_texts, config.query_weights == "learned",
                                                   config.pooling, **options)
    return TrainableEncoder(encoder, config, device)
