"""What a task loss is: masked, returns ``None`` without labels, and may initialise itself from the data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ldoctor.datamodule import TaskDataModule


class TaskLoss(nn.Module):
    """Base of the per-task losses.

    ``forward(logits, target)`` averages over the known (non-NaN) labels and returns ``None`` when a batch has none,
    so the weighting leaves the task out of that step. :meth:`init_from_data` is called once when ``fit`` starts with
    the task's :class:`~ldoctor.datamodule.TaskDataModule` (e.g. class balance from ``train_labels()``).
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def init_from_data(self, data: TaskDataModule) -> None:
        """Initialise from the task's training data; default: nothing."""
