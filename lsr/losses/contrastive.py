"""InfoNCE over dot-product scores, with in-batch and hard negatives."""

from __future__ import annotations

import torch
from torch import nn


class InfoNceLoss(nn.Module):
    """``-log softmax(s(q_i, d) / temperature)`` at the positive of query ``i``.

    Documents come in groups: query ``i`` owns rows ``i*g .. i*g+g-1`` of the document
    matrix, its positive first, then its hard negatives. With in-batch negatives every
    other query's documents are negatives too (the SPLADE papers' "in-batch negatives").

    Args:
        temperature: divides the scores (1.0 for raw SPLADE dot products).
        in_batch_negatives: score each query against all documents of the batch.
    """

    def __init__(self, temperature: float = 1.0, in_batch_negatives: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.in_batch_negatives = in_batch_negatives

    def forward(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries: ``(batch, vocab)``.
            documents: ``(batch * group, vocab)``, grouped per query, positive first.
        """
        batch = queries.shape[0]
        group = _group_size(queries, documents)
        if self.in_batch_negatives:
            scores = queries @ documents.T  # (batch, batch * group)
            target = torch.arange(batch, device=queries.device) * group
        else:
            grouped = documents.view(batch, group, -1)  # (batch, group, vocab)
            scores = torch.einsum("bv,bgv->bg", queries, grouped)
            target = torch.zeros(batch, dtype=torch.long, device=queries.device)
        return nn.functional.cross_entropy(scores / self.temperature, target)


def group_scores(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """``(batch, group)`` scores of each query against its own documents."""
    batch = queries.shape[0]
    grouped = documents.view(batch, _group_size(queries, documents), -1)  # (batch, group, vocab)
    return torch.einsum("bv,bgv->bg", queries, grouped)


def _group_size(queries: torch.Tensor, documents: torch.Tensor) -> int:
    if queries.shape[0] == 0 or documents.shape[0] % queries.shape[0]:
        raise ValueError(f"{documents.shape[0]} documents do not split into equal groups for "
                         f"{queries.shape[0]} queries")
    return documents.shape[0] // queries.shape[0]
