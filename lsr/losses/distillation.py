"""Distillation from teacher scores: MarginMSE (Hofstätter et al.) and KL divergence."""

from __future__ import annotations

import torch
from torch import nn


class MarginMseLoss(nn.Module):
    """Mean of ``((s_pos - s_neg) - (t_pos - t_neg))^2`` over every negative of every query.

    Inputs are ``(batch, group)`` student and teacher scores, the positive in column 0.
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student_margin = student[:, :1] - student[:, 1:]  # (batch, group - 1)
        teacher_margin = teacher[:, :1] - teacher[:, 1:]
        return nn.functional.mse_loss(student_margin, teacher_margin)


class KlDivergenceLoss(nn.Module):
    """``KL(softmax(teacher / T) || softmax(student / T))`` per query, averaged.

    Args:
        temperature: softens both distributions.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student_log = torch.log_softmax(student / self.temperature, dim=1)
        teacher_log = torch.log_softmax(teacher / self.temperature, dim=1)
        return nn.functional.kl_div(student_log, teacher_log, reduction="batchmean", log_target=True)
