"""Masked per-task losses: BCE for binary and multilabel tasks, cross-entropy for multiclass ones.

Unknown labels are NaN (DESIGN decision 5). Each task loss averages over its labelled entries only and
returns ``None`` when a batch has none, so the weighting leaves that task out of the sum entirely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ldoctor.labels import positive_weights
from ldoctor.losses.base import TaskLoss
from ldoctor.tasks import TaskSpec

if TYPE_CHECKING:
    from ldoctor.datamodule import TaskDataModule


class MaskedBCEWithLogits(TaskLoss):
    """Binary cross-entropy over the labelled entries of binary and multilabel tasks.

    Args:
        task: the task (binary or multilabel).
        pos_weight: optional weight of positive examples per output (length ``num_outputs``), e.g.
            negatives / positives of the training labels; ``"auto"`` computes exactly that from the task's
            training labels (``TaskDataModule.train_labels()``) when training starts.
    """

    def __init__(self, task: TaskSpec, pos_weight: list[float] | Literal["auto"] | None = None) -> None:
        super().__init__()
        if task.kind not in ("binary", "multilabel"):
            raise ValueError(f"MaskedBCEWithLogits needs a binary or multilabel task, {task.name!r} is {task.kind}")
        self.task = task
        self.auto_pos_weight = pos_weight == "auto"
        self.register_buffer("pos_weight", torch.ones(task.num_outputs), persistent=False)
        if isinstance(pos_weight, (list, tuple)):
            self.set_pos_weight(pos_weight)

    def set_pos_weight(self, pos_weight: Sequence[float] | torch.Tensor) -> None:
        """Replace the positive weights (``num_outputs`` values)."""
        weight = torch.as_tensor(pos_weight, dtype=torch.float).flatten()
        if len(weight) != self.task.num_outputs:
            raise ValueError(
                f"pos_weight of task {self.task.name!r} has {len(weight)} values, expected {self.task.num_outputs}"
            )
        self.pos_weight.copy_(weight.to(self.pos_weight.device))

    def init_from_data(self, data: TaskDataModule) -> None:
        """With ``pos_weight="auto"``: ``#negative / #positive`` of each output over ``data.train_labels()``."""
        if self.auto_pos_weight:
            self.set_pos_weight(positive_weights(data.train_labels(), self.task.class_names))
            rank_zero_info(f"{self.task.name}: pos_weight from the training labels: {self.pos_weight.tolist()}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Args: logits, target ``[B, C]`` (target NaN = unknown). Returns: mean loss, or ``None``."""
        target = target.view_as(logits)
        mask = ~torch.isnan(target)
        if not mask.any():
            return None
        pos_weight = self.pos_weight.to(logits.dtype).expand_as(logits)[mask]
        return F.binary_cross_entropy_with_logits(
            logits[mask].float(), target[mask].float(), pos_weight=pos_weight.float()
        )


class MaskedCrossEntropy(TaskLoss):
    """Cross-entropy over samples of a multiclass task whose class index is not NaN.

    Args:
        task: the multiclass task.
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.
    """

    def __init__(self, task: TaskSpec, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if task.kind != "multiclass":
            raise ValueError(f"MaskedCrossEntropy needs a multiclass task, {task.name!r} is {task.kind}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Args: logits ``[B, C]``, target ``[B]`` class indices as floats (NaN = unknown)."""
        target = target.view(-1)
        mask = ~torch.isnan(target)
        if not mask.any():
            return None
        return F.cross_entropy(logits[mask].float(), target[mask].long(), label_smoothing=self.label_smoothing)


def default_task_loss(task: TaskSpec) -> nn.Module:
    """The masked loss for the task's kind."""
    return MaskedCrossEntropy(task) if task.kind == "multiclass" else MaskedBCEWithLogits(task)


#: Config type of ``MultiTaskModule.task_losses`` values: called with the task's spec.
TaskLossCallable = Callable[[TaskSpec], nn.Module]
