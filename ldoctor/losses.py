"""Masked per-task losses and the weighting strategies that combine them.

Unknown labels are NaN (DESIGN decision 5). Each task loss averages over its labelled entries only and
returns ``None`` when a batch has none, so the weighting leaves that task out of the sum entirely.

Weighting strategies share one interface (``LossWeighting``): they turn ``{task: loss}`` into one scalar,
report their current per-task weights, and never call ``backward()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ldoctor.tasks import TaskSpec


class MaskedBCEWithLogits(nn.Module):
    """Binary cross-entropy over the labelled entries of binary and multilabel tasks.

    Args:
        task: the task (binary or multilabel).
        pos_weight: optional weight of positive examples per output (length ``num_outputs``), e.g.
            negatives / positives of the training labels; ``"auto"`` takes exactly that from the task's
            DataModule (its ``pos_weight()``) when training starts.
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


class MaskedCrossEntropy(nn.Module):
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


class LossWeighting(nn.Module):
    """Combine per-task losses into one scalar.

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


class EqualWeighting(LossWeighting):
    """``total = sum_t L_t``."""

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        self._check(losses)
        return torch.stack(list(losses.values())).sum()

    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.task_names, 1.0)


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


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), classification form.

    With one learnable ``s_t = log sigma_t^2`` per task (initialised at 0):
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


#: Config type of ``MultiTaskModule.weighting``: a weighting class (or ``class_path`` + ``init_args``)
#: that the module calls with its task names.
WeightingCallable = Callable[[Sequence[str]], LossWeighting]
#: Config type of ``MultiTaskModule.task_losses`` values: called with the task's spec.
TaskLossCallable = Callable[[TaskSpec], nn.Module]
