"""SPLADE pooling over a chunked vocabulary projection.

``w_j = max_i log(1 + relu(logit_ij))`` (or the sum over ``i``) for the non-padding tokens
``i``. Because ``log(1 + relu(x))`` is monotone, the max over tokens is taken on the raw
logits and the activation applied to the ``(batch, vocab)`` result; the projection runs in
vocabulary chunks so only a ``(batch, seq_len, chunk)`` slice exists at a time. When
gradients are needed each chunk is checkpointed: its logits are recomputed in the backward
pass instead of being kept, so training memory stays at one chunk too.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def splade_pool(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    attention_mask: torch.Tensor,
    pooling: str = "max",
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Project hidden states onto the vocabulary and pool them into SPLADE weights.

    Args:
        hidden: ``(batch, seq_len, hidden)`` transformed hidden states (the MLM head input
            to its decoder).
        weight: ``(vocab, hidden)`` decoder weight.
        bias: ``(vocab,)`` decoder bias or None.
        attention_mask: ``(batch, seq_len)``, 1 for real tokens.
        pooling: ``"max"`` (SPLADE v2 and later) or ``"sum"`` (SPLADE v1).
        chunk_size: vocabulary columns projected at once.

    Returns:
        ``(batch, vocab)`` non-negative weights.
    """
    if pooling not in ("max", "sum"):
        raise ValueError(f"pooling must be 'max' or 'sum', got {pooling!r}")
    padding = ~attention_mask.bool().unsqueeze(-1)  # (batch, seq_len, 1)
    pool = _max_chunk if pooling == "max" else _sum_chunk
    track = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    parts = []
    for start in range(0, weight.shape[0], chunk_size):
        end = min(start + chunk_size, weight.shape[0])
        chunk_bias = None if bias is None else bias[start:end]
        if track:
            parts.append(checkpoint(pool, hidden, weight[start:end], chunk_bias, padding, use_reentrant=False))
        else:
            parts.append(pool(hidden, weight[start:end], chunk_bias, padding))
    return torch.cat(parts, dim=1)


def _logits(hidden, weight, bias):
    logits = hidden @ weight.T  # (batch, seq_len, chunk)
    return logits if bias is None else logits + bias


def _max_chunk(hidden, weight, bias, padding):
    # A padded position may carry any value <= 0: relu maps the max back to the same.
    logits = _logits(hidden, weight, bias).masked_fill(padding, 0.0)
    return torch.log1p(torch.relu(logits.amax(dim=1)))


def _sum_chunk(hidden, weight, bias, padding):
    activations = torch.log1p(torch.relu(_logits(hidden, weight, bias))).masked_fill(padding, 0.0)
    return activations.sum(dim=1)
