"""Equal weighting: the plain sum of the task losses."""

from __future__ import annotations

import torch

from ldoctor.losses.weighting.base import LossWeighting


class EqualWeighting(LossWeighting):
    """``total = sum_t L_t``."""

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        self._check(losses)
        return torch.stack(list(losses.values())).sum()

    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.task_names, 1.0)
