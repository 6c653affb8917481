"""Documents longer than the model's window: overlapping windows, each encoded, max-pooled.

A BERT-style encoder reads at most its position limit (512 tokens for the bundled models).
With a document token limit above it, a document's text tokens (cut at the limit) are split
into windows of ``window`` tokens, special tokens included, each window starting
``WINDOW_OVERLAP`` of its text tokens before the previous one ends, so that no token is read
only at a window's edge. Every window is encoded as a document of its own and the document's
vector is the maximum over its windows, term by term: SPLADE's own max pooling over tokens,
carried over windows (a sum would count the overlaps twice). A document that fits one window is
tokenised and encoded exactly as without windows.
"""

from __future__ import annotations

import numpy as np
import torch

from lsr.encoders.tokens import pad_right, tokenize

WINDOW_OVERLAP = 0.25  # of a window's text tokens


def model_window(config) -> int:
    """The longest input the model reads: its position limit (a Hugging Face config)."""
    return int(getattr(config, "max_position_embeddings", None) or 512)


def module_window(module: torch.nn.Module) -> int:
    """`model_window` of the first Hugging Face model inside ``module``."""
    config = next((m.config for m in module.modules() if hasattr(getattr(m, "config", None), "to_dict")), None)
    return model_window(config)


def split_into_windows(tokenizer, texts: list[str], max_length: int, window: int) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of every window of every text, and the text each window belongs to.

    Args:
        tokenizer: the model's tokenizer.
        texts: the documents.
        max_length: the document token limit (special tokens counted once, as without windows).
        window: tokens per window, special tokens included.
    """
    prefix, suffix = _special_tokens(tokenizer)
    special = len(prefix) + len(suffix)
    content = tokenize(tokenizer, list(texts), add_special_tokens=False, truncation=True,
                       max_length=max_length - special, verbose=False)["input_ids"]
    span = window - special
    stride = max(1, span - int(span * WINDOW_OVERLAP))
    pieces, owner = [], []
    for number, ids in enumerate(content):
        start = 0
        while True:
            pieces.append(prefix + ids[start : start + span] + suffix)
            owner.append(number)
            if start + span >= len(ids):
                break
            start += stride
    return pieces, np.asarray(owner, dtype=np.int64)


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text ([CLS] and [SEP] for BERT)."""
    bare = tokenize(tokenizer, "a", add_special_tokens=False)["input_ids"]
    framed = tokenize(tokenizer, "a", add_special_tokens=True)["input_ids"]
    at = next(i for i in range(len(framed)) if framed[i : i + len(bare)] == bare)
    return framed[:at], framed[at + len(bare) :]


def padded(pieces: list[list[int]], pad_id: int) -> dict:
    """``input_ids`` and ``attention_mask`` tensors, padded on the right to the longest piece."""
    input_ids, attention_mask = pad_right(pieces, pad_id)
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}


def max_by_owner(vectors: torch.Tensor, owner: torch.Tensor, count: int) -> torch.Tensor:
    """``(count, vocab)``: row d is the elementwise maximum of the rows of ``vectors`` owned by d
    (every d owns at least one). Differentiable, for training."""
    index = owner.to(vectors.device).unsqueeze(1).expand_as(vectors)
    out = vectors.new_zeros((count, vectors.shape[1]))
    return out.scatter_reduce(0, index, vectors, reduce="amax", include_self=False)
