"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ldoctor.losses.weighting.base import LossWeighting


class UncertaintyWeighting(LossWeighting):
    """Classification form with one learnable ``s_t = log sigma_t^2`` per task (initialised at 0):
    ``total = sum_t exp(-s_t) * L_t + 0.5 * s_t`` over the tasks present in the step.

    The total can be negative. ``s`` belongs in its own optimizer group without weight decay.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__(task_names)
        self.log_vars = nn.Parameter(torch.zeros(len(self.task_names)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        self._check(losses)
        terms = []
        for task, loss in losses.items():
            s = self.log_vars[self.task_names.index(task)]
            terms.append(torch.exp(-s) * loss + 0.5 * s)
        return torch.stack(terms).sum()

    def weights(self) -> dict[str, float]:
        return {t: float(torch.exp(-s)) for t, s in zip(self.task_names, self.log_vars.detach())}
