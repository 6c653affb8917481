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


def batched_max(hidden, weight, bias, mask):
    """`splade_pool`'s batched formula, without gradients (the oracle of the per-document path)."""
    with torch.no_grad():
        return splade_pool(hidden, weight, bias, mask, "max")


@pytest.mark.parametrize("step", [None, 300])  # the default step, and one that cuts every row in several
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_document_max_equals_the_batched_formula(seed, step, monkeypatch):
    from lsr.encoders import pooling

    if step is not None:
        monkeypatch.setattr(pooling, "LOGITS_PER_STEP", step)
    generator = torch.Generator().manual_seed(seed)
    batch, seq_len, width, vocab = 6, 40, 16, 1000  # vocab: not a multiple of any step
    hidden = torch.randn(batch, seq_len, width, generator=generator)
    weight = torch.randn(vocab, width, generator=generator)
    bias = torch.randn(vocab, generator=generator)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    mask = (torch.arange(seq_len) < lengths[:, None]).long()
    mask[1] = torch.randint(0, 2, (seq_len,), generator=generator)  # real tokens anywhere (left padding)
    mask[1, 0] = 1
    mask[2] = 0  # padding only: all weights 0
    for b in (bias, None):
        ours = pooling.max_pool_by_document(hidden, weight.T.contiguous(), b, mask)
        torch.testing.assert_close(ours, batched_max(hidden, weight, b, mask), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours.double(), plain(hidden.double(), weight.double(),
                                                        0.0 if b is None else b.double(), mask, "max"),
                                   rtol=1e-5, atol=1e-5)  # float32 against float64
    assert torch.equal(pooling.max_pool_by_document(hidden, weight.T.contiguous(), bias, mask)[2], torch.zeros(vocab))


def test_per_document_padding_never_contributes():
    from lsr.encoders.pooling import max_pool_by_document

    hidden = torch.randn(1, 4, 8)
    weight, bias = torch.randn(20, 8), torch.full((20,), 5.0)
    mask = torch.tensor([[1, 1, 0, 0]])
    changed = hidden.clone()
    changed[0, 2:] = 100.0
    columns = weight.T.contiguous()
    assert torch.equal(max_pool_by_document(hidden, columns, bias, mask), max_pool_by_document(changed, columns, bias, mask))


def test_module_takes_the_per_document_path_without_gradients_and_follows_weight_updates(monkeypatch):
    """`SpladeModule` under no_grad takes the per-document path and equals its gradient path,
    before and after an in-place weight change (the transposed copy it keeps is made again)."""
    from transformers import BertConfig, BertForMaskedLM

    from lsr.encoders import splade
    from lsr.encoders.splade import SpladeModule

    calls = []
    per_document = splade.max_pool_by_document
    monkeypatch.setattr(splade, "max_pool_by_document", lambda *args: (calls.append(1), per_document(*args))[1])

    torch.manual_seed(0)
    config = BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    module = SpladeModule(BertForMaskedLM(config).eval(), vocab_chunk_size=64)
    ids = torch.randint(0, 300, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    for _ in range(2):
        with torch.no_grad():
            fast = module(ids, mask)
        slow = module(ids, mask).detach()  # gradients on: the checkpointed batched path
        torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-6)
        with torch.no_grad():
            module.decoder.weight.mul_(-2.0)  # what an optimizer step does: in place
    assert len(calls) == 2  # the no_grad calls only


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_bias", [True, False])
def test_argmax_pooling_gives_the_checkpointed_values_and_gradients(seed, with_bias):
    """Training's max pooling (gradients only through each nonzero weight's maximising token)
    against the plain formula, on random data with padding, a row of padding only and
    negative logits."""
    from lsr.encoders.pooling import max_pool_through_argmax

    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(4, 7, 8, generator=generator, dtype=torch.float64)
    weight = torch.randn(300, 8, generator=generator, dtype=torch.float64)
    bias = torch.randn(300, generator=generator, dtype=torch.float64) if with_bias else None
    mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [0] * 7, [0, 1, 1, 0, 1, 0, 1]])
    upstream = torch.rand(4, 300, generator=generator, dtype=torch.float64)

    results = []
    for pool in (max_pool_through_argmax, lambda h, w, b, m: plain(h, w, 0.0 if b is None else b, m, "max")):
        leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias) if t is not None]
        output = pool(*leaves, *([None] if bias is None else []), mask)
        (output * upstream).sum().backward()
        results.append((output.detach(), [leaf.grad for leaf in leaves]))
    (ours, our_grads), (reference, reference_grads) = results
    assert (ours > 0).sum() > 100 and (ours == 0).sum() > 100  # both kinds of weight are exercised
    torch.testing.assert_close(ours, reference)
    for got, expected in zip(our_grads, reference_grads):
        torch.testing.assert_close(got, expected)


def test_training_forward_takes_the_argmax_pooling(monkeypatch):
    """A SPLADE module with gradients on a CPU pools through `max_pool_through_argmax`, and its
    vectors equal the inference path's."""
    from transformers import BertConfig, BertForMaskedLM

    from lsr.encoders import splade

    config = BertConfig(vocab_size=500, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    module = splade.SpladeModule(BertForMaskedLM(config)).eval()  # no dropout: both passes see one model
    ids = torch.randint(5, 500, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 6:] = 0
    calls = []
    through_argmax = splade.max_pool_through_argmax
    monkeypatch.setattr(splade, "max_pool_through_argmax", lambda *args: (calls.append(1), through_argmax(*args))[1])
    trained = module(ids, mask)
    trained.sum().backward()
    assert calls and module.decoder.weight.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(trained.detach(), module(ids, mask))
