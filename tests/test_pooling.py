"""The chunked, checkpointed SPLADE pooling against the plain formula: values and gradients."""

from __future__ import annotations

import pytest
import torch

from lsr.encoders.pooling import splade_pool


def plain(hidden, weight, bias, mask, pooling):
    logits = hidden @ weight.T + bias  # (batch, seq_len, vocab)
    activations = torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1)
    return activations.amax(dim=1) if pooling == "max" else activations.sum(dim=1)


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_and_gradients_equal_the_plain_formula(pooling, seed):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 6, 8, generator=generator, dtype=torch.float64)
    weight = torch.randn(50, 8, generator=generator, dtype=torch.float64)
    bias = torch.randn(50, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    upstream = torch.rand(3, 50, generator=generator, dtype=torch.float64)  # a random loss direction

    grads = []
    for pool in (lambda h, w, b: splade_pool(h, w, b, mask, pooling, chunk_size=7),
                 lambda h, w, b: plain(h, w, b, mask, pooling)):
        leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        output = pool(*leaves)
        (output * upstream).sum().backward()
        grads.append((output.detach(), [leaf.grad for leaf in leaves]))
    (ours, our_grads), (reference, reference_grads) = grads
    torch.testing.assert_close(ours, reference)
    for got, expected in zip(our_grads, reference_grads):
        torch.testing.assert_close(got, expected)


def test_padding_never_contributes():
    hidden = torch.randn(1, 4, 8)
    weight, bias = torch.randn(20, 8), torch.full((20,), 5.0)  # every logit positive
    mask = torch.tensor([[1, 1, 0, 0]])
    changed = hidden.clone()
    changed[0, 2:] = 100.0  # padded positions with huge values
    torch.testing.assert_close(splade_pool(hidden, weight, bias, mask), splade_pool(changed, weight, bias, mask))


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        splade_pool(torch.zeros(1, 2, 3), torch.zeros(4, 3), None, torch.ones(1, 2), "mean")
