"""The interface every loss-weighting strategy shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class LossWeighting(nn.Module):
    """Combine per-task losses into one scalar; never calls ``backward()``.

    Args:
        task_names: every task the model serves, in a fixed order.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        if not task_names:
            raise ValueError("LossWeighting needs at least one task name")
        self.task_names = list(task_names)

    def _check(self, losses: dict[str, torch.Tensor]) -> None:
        unknown = set(losses) - set(self.task_names)
        if unknown:
            raise KeyError(f"losses for unknown tasks {sorted(unknown)}; known: {self.task_names}")
        if not losses:
            raise ValueError("no task has a labelled sample in this step: nothing to weight")

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Args: ``{task: scalar loss}`` for the tasks present in this step. Returns: the total."""
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        """Current effective weight of each task's loss."""
        raise NotImplementedError


#: Config type of ``MultiTaskModule.weighting``: a weighting class (or ``class_path`` + ``init_args``)
#: that the module calls with its task names.
WeightingCallable = Callable[[Sequence[str]], LossWeighting]
