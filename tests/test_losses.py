"""Training losses and sparsity regularisers against values worked out by hand.

Covers `lsr.losses.contrastive` (InfoNceLoss with and without in-batch negatives,
group_scores), `lsr.losses.distillation` (MarginMseLoss, KlDivergenceLoss) and
`lsr.losses.regularizers` (FLOPS, L1, IDF-aware FLOPS with its IDF floor, the activation
threshold, quadratic_warmup, build_regularizer), plus a check that gradients flow.
"""

from __future__ import annotations

import math

import pytest
import torch

from lsr.losses.contrastive import InfoNceLoss, group_scores
from lsr.losses.distillation import KlDivergenceLoss, MarginMseLoss
from lsr.losses.regularizers import (
    FlopsLoss,
    IdfAwareFlopsLoss,
    L1Loss,
    build_regularizer,
    quadratic_warmup,
)

# Two queries, groups of g = 2 documents (positive first):
#   q0 = [1, 0] owns d0 = [2, 0] (positive), d1 = [1, 0]
#   q1 = [0, 1] owns d2 = [0, 3] (positive), d3 = [1, 1]
QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
DOCUMENTS = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])


def close(actual: torch.Tensor, expected: float) -> bool:
    return math.isclose(float(actual), expected, rel_tol=1e-5, abs_tol=1e-6)


# ---------------------------------------------------------------- InfoNCE


def test_group_scores():
    # q0 . d0 = 2, q0 . d1 = 1; q1 . d2 = 3, q1 . d3 = 1
    assert torch.equal(group_scores(QUERIES, DOCUMENTS), torch.tensor([[2.0, 1.0], [3.0, 1.0]]))


def test_infonce_own_group_only():
    # q0 scores [2, 1] -> -log(e^2 / (e^2 + e^1)) = log(1 + e^-1)
    # q1 scores [3, 1] -> log(1 + e^-2)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 2
    loss = InfoNceLoss(in_batch_negatives=False)(QUERIES, DOCUMENTS)
    assert close(loss, expected)


def test_infonce_with_in_batch_negatives():
    # q0 against d0..d3: [2, 1, 0, 1], positive at column 0
    #   -> -2 + log(e^2 + e^1 + e^0 + e^1)
    # q1 against d0..d3: [0, 0, 3, 1], positive at column 2 (= 1 * g)
    #   -> -3 + log(e^0 + e^0 + e^3 + e^1)
    e = math.e
    loss0 = -2 + math.log(e**2 + e + 1 + e)
    loss1 = -3 + math.log(1 + 1 + e**3 + e)
    loss = InfoNceLoss(in_batch_negatives=True)(QUERIES, DOCUMENTS)
    assert close(loss, (loss0 + loss1) / 2)


def test_infonce_temperature_divides_scores():
    # temperature 2: own-group scores [1, 0.5] and [1.5, 0.5]
    expected = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(-1))) / 2
    loss = InfoNceLoss(temperature=2.0, in_batch_negatives=False)(QUERIES, DOCUMENTS)
    assert close(loss, expected)
    with pytest.raises(ValueError, match="temperature"):
        InfoNceLoss(temperature=0)


# ---------------------------------------------------------------- distillation


def test_margin_mse():
    # student margins (pos - neg): row0 [3-1, 3-2] = [2, 1], row1 [0-1, 0-0] = [-1, 0]
    # teacher margins:             row0 [2-1, 2-1] = [1, 1], row1 [1-0, 1-0] = [1, 1]
    # squared differences 1, 0, 4, 1 -> mean 6 / 4 = 1.5
    student = torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, 0.0]])
    teacher = torch.tensor([[2.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert close(MarginMseLoss()(student, teacher), 1.5)


def test_kl_divergence_by_hand():
    # query 0: p_t = softmax[0, 0] = [.5, .5], p_s = softmax[ln 3, 0] = [.75, .25]
    #   KL = .5 ln(.5/.75) + .5 ln(.5/.25)
    # query 1: p_t = [.75, .25], p_s = [.5, .5]
    #   KL = .75 ln(.75/.5) + .25 ln(.25/.5)
    # averaged over the two queries
    ln3 = math.log(3)
    student = torch.tensor([[ln3, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [ln3, 0.0]])
    kl0 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert close(KlDivergenceLoss()(student, teacher), (kl0 + kl1) / 2)


def test_kl_divergence_matches_formula_with_temperature():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, generator=generator)
    teacher = torch.randn(3, 4, generator=generator)
    temperature = 2.5
    log_s = torch.log_softmax(student / temperature, dim=1)
    log_t = torch.log_softmax(teacher / temperature, dim=1)
    # sum_j p_t (log p_t - log p_s), averaged over queries
    expected = (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()
    assert close(KlDivergenceLoss(temperature)(student, teacher), float(expected))
    assert close(KlDivergenceLoss()(teacher, teacher), 0.0)


# ---------------------------------------------------------------- regularisers

W = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, -4.0]])


def test_flops():
    # |W| column means: (1+3)/2 = 2, 0, (2+4)/2 = 3 -> 2^2 + 0^2 + 3^2 = 13
    assert close(FlopsLoss()(W), 13.0)


def test_l1():
    # row sums of |W|: 1+0+2 = 3, 3+0+4 = 7 -> mean 5
    assert close(L1Loss()(W), 5.0)


def test_idf_aware_flops_with_floor():
    # idf [2, 0.01, 0.5] with min_idf 0.1 -> [2, 0.1, 0.5]
    # column means of [[1, 1, 2], [3, 0, 4]]: 2, 0.5, 3
    # (2/2)^2 + (0.5/0.1)^2 + (3/0.5)^2 = 1 + 25 + 36 = 62
    vectors = torch.tensor([[1.0, 1.0, 2.0], [3.0, 0.0, 4.0]])
    loss = IdfAwareFlopsLoss(torch.tensor([2.0, 0.01, 0.5]), min_idf=0.1)
    assert close(loss(vectors), 62.0)
    # a lower floor lets the tiny IDF through: (0.5/0.01)^2 = 2500
    assert close(IdfAwareFlopsLoss(torch.tensor([2.0, 0.01, 0.5]), min_idf=0.001)(vectors), 1 + 2500 + 36)
    with pytest.raises(ValueError, match="min_idf"):
        IdfAwareFlopsLoss(torch.ones(3), min_idf=0)


# rows with 1, 2 and 0 active dimensions
SPARSE = torch.tensor([[1.0, 0.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 0.0]])


def test_threshold_zeroes_sparse_rows_but_divides_by_full_batch():
    # threshold 1: rows 0 (1 active) and 2 (0 active) are left out, row 1 kept;
    # the mean still divides by 3 rows.
    # FLOPS: column means [2/3, 3/3, 0] -> 4/9 + 1 = 13/9
    assert close(FlopsLoss(threshold=1)(SPARSE), 13 / 9)
    # L1: row sums [0, 5, 0] -> 5/3
    assert close(L1Loss(threshold=1)(SPARSE), 5 / 3)
    # IDF-aware with idf [1, 0.5, 1]: (2/3 / 1)^2 + (1 / 0.5)^2 = 4/9 + 4
    idf_loss = IdfAwareFlopsLoss(torch.tensor([1.0, 0.5, 1.0]), threshold=1)
    assert close(idf_loss(SPARSE), 4 / 9 + 4)
    # without a threshold row 0 counts: column means [1, 1, 0] -> 2
    assert close(FlopsLoss()(SPARSE), 2.0)
    # threshold 2 leaves every row out
    assert close(FlopsLoss(threshold=2)(SPARSE), 0.0)


def test_quadratic_warmup():
    assert quadratic_warmup(0.1, 0, 100) == 0.0
    assert math.isclose(quadratic_warmup(0.1, 50, 100), 0.1 / 4)  # (50/100)^2 = 1/4
    assert quadratic_warmup(0.1, 100, 100) == 0.1
    assert quadratic_warmup(0.1, 1000, 100) == 0.1
    assert quadratic_warmup(0.1, 0, 0) == 0.1


def test_build_regularizer():
    assert build_regularizer("none") is None
    flops = build_regularizer("flops", threshold=3)
    assert isinstance(flops, FlopsLoss) and flops.threshold == 3
    assert isinstance(build_regularizer("l1"), L1Loss)
    idf_flops = build_regularizer("idf_flops", idf=torch.tensor([4.0, 0.0]), min_idf=0.5)
    assert isinstance(idf_flops, IdfAwareFlopsLoss)
    assert torch.allclose(idf_flops.inverse_idf, torch.tensor([0.25, 2.0]))
    with pytest.raises(ValueError, match="'flop'"):
        build_regularizer("flop")
    with pytest.raises(ValueError, match="IDF"):
        build_regularizer("idf_flops")


# ---------------------------------------------------------------- gradients


def test_gradients_flow():
    queries = QUERIES.clone().requires_grad_()
    documents = DOCUMENTS.clone().requires_grad_()
    teacher = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    loss = (InfoNceLoss()(queries, documents)
            + MarginMseLoss()(group_scores(queries, documents), teacher)
            + KlDivergenceLoss()(group_scores(queries, documents), teacher)
            + FlopsLoss()(documents) + L1Loss()(queries)
            + IdfAwareFlopsLoss(torch.ones(2))(documents))
    loss.backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    assert documents.grad is not None and documents.grad.abs().sum() > 0
