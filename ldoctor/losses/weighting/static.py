"""Static weighting: fixed per-task weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ldoctor.losses.weighting.base import LossWeighting


class StaticWeighting(LossWeighting):
    """``total = sum_t w_t L_t`` with fixed weights.

    Args:
        task_names: every task.
        weights: task -> weight; tasks not named get 1.0.
    """

    def __init__(self, task_names: Sequence[str], weights: dict[str, float] | None = None) -> None:
        super().__init__(task_names)
        weights = weights or {}
        unknown = set(weights) - set(self.task_names)
        if unknown:
            raise ValueError(f"StaticWeighting.weights names unknown tasks {sorted(unknown)}; known: {self.task_names}")
        self.static = {t: float(weights.get(t, 1.0)) for t in self.task_names}

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        self._check(losses)
        return torch.stack([self.static[t] * loss for t, loss in losses.items()]).sum()

    def weights(self) -> dict[str, float]:
        return dict(self.static)
