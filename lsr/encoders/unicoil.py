"""uniCOIL (Lin & Ma 2021): one weight per input token, ``relu(W h_i)``, pooled per vocabulary id.

No expansion: a text's vector only has the word pieces it contains. Special tokens ([CLS],
[SEP], [PAD]) get no weight. Repeated word pieces keep their largest weight (``max``, the
default) or add up (``sum``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lsr.index.sparse_batch import SparseBatch
from lsr.encoders.batching import encode_texts, special_token_ids
from lsr.encoders.config_file import write_encoder_config
from lsr.encoders.windows import model_window
from lsr.encoders.models import DEFAULT_MODEL, resolve_model

HEAD_FILE = "unicoil_head.safetensors"


class UniCoilModule(nn.Module):
    """A transformer encoder with a linear term-weighting head.

    Args:
        encoder: a Hugging Face ``AutoModel`` (the body of a BERT-type model).
        vocab_size: columns of the output.
        special_ids: token ids that never get a weight.
        aggregation: ``"max"`` or ``"sum"`` over repeated word pieces.
    """

    def __init__(self, encoder: nn.Module, vocab_size: int, special_ids: list[int], aggregation: str = "max") -> None:
        super().__init__()
        if aggregation not in ("max", "sum"):
            raise ValueError(f"aggregation must be 'max' or 'sum', got {aggregation!r}")
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 1)
        special = torch.zeros(vocab_size, dtype=torch.bool)
        special[special_ids] = True
        self.register_buffer("special", special, persistent=False)
        self.vocab_size = vocab_size
        self.aggregation = aggregation

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = torch.relu(self.head(hidden).squeeze(-1))  # (batch, seq_len)
        keep = attention_mask.bool() & ~self.special[input_ids]
        weights = weights * keep
        pooled = weights.new_zeros(input_ids.shape[0], self.vocab_size)  # (batch, vocab)
        reduce = "amax" if self.aggregation == "max" else "sum"
        return pooled.scatter_reduce(1, input_ids, weights, reduce=reduce, include_self=True)


class UniCoilEncoder:
    """Encodes text with a `UniCoilModule` (queries and documents alike)."""

    def __init__(self, module: UniCoilModule, tokenizer, model_name: str, query_max_length: int = 64,
                 doc_max_length: int = 256, batch_size: int = 32, device: str = "cpu") -> None:
        self.module = module.to(device).eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.vocab_size = module.vocab_size
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.batch_size = batch_size
        self.device = device

    @classmethod
    def from_base(cls, base: str | None, aggregation: str = "max", **options) -> "UniCoilEncoder":
        """A new uniCOIL model on the encoder body of ``base`` (head freshly initialised)."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        path = resolve_model(base)
        tokenizer = AutoTokenizer.from_pretrained(path)
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # a masked LM's head weights go unused here, by design
        transformers_logging.disable_progress_bar()
        try:
            encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
        finally:
            transformers_logging.set_verbosity(verbosity)
        module = UniCoilModule(encoder, len(tokenizer), special_token_ids(tokenizer), aggregation)
        return cls(module, tokenizer, base or DEFAULT_MODEL, **options)

    @classmethod
    def load(cls, directory: str | Path, settings: dict, **options) -> "UniCoilEncoder":
        from safetensors.torch import load_file

        encoder = cls.from_base(str(directory), settings.get("aggregation", "max"),
                                query_max_length=settings["query_max_length"],
                                doc_max_length=settings["doc_max_length"], **options)
        head = load_file(str(Path(directory) / HEAD_FILE))
        encoder.module.head.load_state_dict(head)
        return encoder

    def describe(self) -> dict:
        return {"type": "unicoil", "model": self.model_name, "tokenizer": self.tokenizer.name_or_path,
                "aggregation": self.module.aggregation, "query_max_length": self.query_max_length,
                "doc_max_length": self.doc_max_length}

    def encode_queries(self, texts: list[str], show_progress: bool = False) -> SparseBatch:
        return self._encode(texts, self.query_max_length, show_progress)

    def encode_documents(self, texts: list[str], show_progress: bool = False) -> SparseBatch:
        """Documents above the model's window are read in overlapping windows (`lsr.encoders.windows`)."""
        return self._encode(texts, self.doc_max_length, show_progress, model_window(self.module.encoder.config))

    def _encode(self, texts, max_length, show_progress, window=None):
        forward = lambda t: self.module(t["input_ids"].to(self.device), t["attention_mask"].to(self.device))
        return encode_texts(texts, self.tokenizer, max_length, self.batch_size, forward, self.vocab_size, show_progress,
                            window)

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.module.encoder.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.module.head.state_dict().items()}, str(directory / HEAD_FILE))
        write_encoder_config(directory, {"type": "unicoil", "aggregation": self.module.aggregation,
                                         "query_max_length": self.query_max_length,
                                         "doc_max_length": self.doc_max_length})
