"""Sparsity regularisers and their warm-up.

- FLOPS (Paria et al. 2020; SPLADE): ``sum_j (mean_i w_ij)^2``, the expected number of
  floating-point operations of a dot product between two vectors of the batch.
- L1: ``mean_i sum_j |w_ij|``.
- IDF-aware FLOPS (Geng et al. 2024, for inference-free models whose queries are weighted
  by IDF): ``sum_j (mean_i w_ij / idf_j)^2``. A frequent word piece (low IDF, long posting
  list, little weight in the query) pays more per unit of document weight than a rare one,
  so the sparsity budget goes to the terms that move the score (and short posting lists).

An optional activation threshold (FLOPS with an l0 mask, Shen et al. 2025) leaves out of the
mean the vectors with at most that many active dimensions, so already-sparse vectors are not
pushed further. Weights (``lambda_q``, ``lambda_d`` in the SPLADE papers) grow quadratically
over the first T steps (`quadratic_warmup`).
"""

from __future__ import annotations

import torch
from torch import nn

REGULARIZERS = ("flops", "l1", "idf_flops", "none")


def _mask_sparse_rows(vectors: torch.Tensor, threshold: int | None) -> torch.Tensor:
    if threshold is None:
        return vectors
    active = (vectors != 0).sum(dim=1)  # (batch,)
    return vectors * (active > threshold).unsqueeze(1)


class FlopsLoss(nn.Module):
    """``sum_j (mean_i |w_ij|)^2`` over the rows ``i`` of a ``(batch, vocab)`` matrix."""

    def __init__(self, threshold: int | None = None) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        vectors = _mask_sparse_rows(vectors.abs(), self.threshold)
        return (vectors.mean(dim=0) ** 2).sum()


class L1Loss(nn.Module):
    """``mean_i sum_j |w_ij|``."""

    def __init__(self, threshold: int | None = None) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return _mask_sparse_rows(vectors.abs(), self.threshold).sum(dim=1).mean()


class IdfAwareFlopsLoss(nn.Module):
    """``sum_j (mean_i |w_ij| / idf_j)^2`` (Geng et al. 2024).

    Args:
        idf: ``(vocab,)`` IDF of each vocabulary id; values below ``min_idf`` are raised to
            it so that a word piece found in every document gets a large, finite penalty.
        min_idf: floor of the IDF.
        threshold: the activation threshold (see the module docstring).
    """

    def __init__(self, idf: torch.Tensor, min_idf: float = 0.1, threshold: int | None = None) -> None:
        super().__init__()
        if min_idf <= 0:
            raise ValueError(f"min_idf must be > 0, got {min_idf}")
        self.register_buffer("inverse_idf", 1.0 / torch.clamp(torch.as_tensor(idf, dtype=torch.float32), min=min_idf))
        self.threshold = threshold

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        vectors = _mask_sparse_rows(vectors.abs(), self.threshold)
        return ((vectors.mean(dim=0) * self.inverse_idf) ** 2).sum()


def quadratic_warmup(weight: float, step: int, warmup_steps: int) -> float:
    """``weight * min(1, (step / T)^2)``: the SPLADE schedule of lambda_q and lambda_d.

    ``step`` counts optimizer steps from 0; with ``warmup_steps = 0`` the full weight applies
    from the start.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return weight
    return weight * (step / warmup_steps) ** 2


def build_regularizer(kind: str, threshold: int | None = None, idf: torch.Tensor | None = None,
                      min_idf: float = 0.1) -> nn.Module | None:
    """One of `REGULARIZERS` by name (None for ``"none"``)."""
    if kind == "none":
        return None
    if kind == "flops":
        return FlopsLoss(threshold)
    if kind == "l1":
        return L1Loss(threshold)
    if kind == "idf_flops":
        if idf is None:
            raise ValueError("idf_flops needs the IDF of the corpus (an inference-free model's query weights)")
        return IdfAwareFlopsLoss(idf, min_idf, threshold)
    raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {kind!r}")
