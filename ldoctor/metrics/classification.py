"""Per-task metric collections by task kind (torchmetrics) and the masking that feeds them.

Logged names are ``{split}/{task}/{metric}``: ``auroc`` (macro for multilabel/multiclass), ``accuracy``,
``f1``; binary tasks add ``sensitivity`` and ``specificity``; multilabel tasks add ``auroc_{class}`` per class.
An AUROC is undefined where the targets hold one class only; torchmetrics scores that 0, here it is NaN (binary:
:class:`DefinedBinaryAUROC`), a multiclass or multilabel ``auroc`` averages over the classes or labels where it is
defined (:class:`DefinedMulticlassAUROC`, :class:`DefinedMacroAUROC`; NaN when none is), and ``auroc_labels`` says
how many labels a multilabel ``auroc`` averaged over. ``MultiTaskModule`` leaves a NaN ``auroc`` out of
``{split}/auroc_mean`` and warns, naming the task.

Inputs reach the metrics as probabilities with unknown labels removed (``prepare_for_metrics``):
binary -> ``[N]`` probabilities and ``[N]`` int targets; multiclass -> ``[N, C]`` and ``[N]``;
multilabel -> ``[N, C]`` and ``[N, C]`` int targets where ``-1`` (was NaN) is ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics import ClasswiseWrapper, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryRecall,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelF1Score,
)
from torchmetrics.utilities import dim_zero_cat

from ldoctor.tasks import TaskSpec

IGNORE_INDEX = -1

#: Config type of ``MultiTaskModule.metrics`` values: called with the task's spec.
MetricsCallable = Callable[[TaskSpec], MetricCollection]


class DefinedBinaryAUROC(BinaryAUROC):
    """Binary AUROC, NaN where it is undefined: targets of one class only (``BinaryAUROC`` returns 0 there).

    Exact AUROC only (no ``thresholds``).
    """

    def __init__(self, max_fpr: float | None = None, ignore_index: int | None = None) -> None:
        super().__init__(max_fpr=max_fpr, thresholds=None, ignore_index=ignore_index)

    def defined(self) -> bool:
        """Whether the known targets so far hold both classes."""
        if not self.target:
            return False
        target = dim_zero_cat(self.target)
        return bool((target == 1).any() and (target == 0).any())

    def compute(self) -> torch.Tensor:
        return super().compute() if self.defined() else torch.tensor(float("nan"), device=self.device)


class DefinedMulticlassAUROC(MulticlassAUROC):
    """Macro one-vs-rest AUROC over the classes where it is defined: those present among the targets and not the
    only class present (``MulticlassAUROC(average="macro")`` scores an absent class 0 and averages it in); NaN when
    none is. Exact AUROC only (no ``thresholds``).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        super().__init__(num_classes=num_classes, average=None, thresholds=None, ignore_index=ignore_index)

    def defined(self) -> torch.Tensor:
        """``[C]`` bool: the classes with both positives and negatives among the known targets so far."""
        if not self.target:
            return torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        target = dim_zero_cat(self.target)
        target = target[target != self.ignore_index] if self.ignore_index is not None else target
        counts = torch.bincount(target.long().clamp(min=0), minlength=self.num_classes)[: self.num_classes]
        return (counts > 0) & (counts < len(target))

    def compute(self) -> torch.Tensor:
        defined = self.defined()
        if not defined.any():
            return torch.tensor(float("nan"), device=self.device)
        return super().compute()[defined.to(self.device)].mean()


class DefinedMacroAUROC(MultilabelAUROC):
    """Macro AUROC over the labels where AUROC is defined: those whose known targets hold both classes.

    ``MultilabelAUROC(average="macro")`` scores a label without a positive (or without a negative) as 0 and
    averages it in, so a validation split where a rare finding is absent reads low by a constant; here such labels
    are left out (NaN when none is defined). Exact AUROC only (no ``thresholds``).
    """

    def __init__(self, num_labels: int, ignore_index: int | None = None) -> None:
        super().__init__(num_labels=num_labels, average=None, thresholds=None, ignore_index=ignore_index)

    def defined(self) -> torch.Tensor:
        """``[C]`` bool: the labels whose known targets so far hold both classes."""
        target = dim_zero_cat(self.target)
        return ((target == 1).sum(0) > 0) & ((target == 0).sum(0) > 0)

    def compute(self) -> torch.Tensor:
        per_label, defined = super().compute(), self.defined()
        return per_label[defined].mean() if defined.any() else per_label.new_tensor(float("nan"))


class DefinedLabelCount(DefinedMacroAUROC):
    """How many labels :class:`DefinedMacroAUROC` averaged over (logged as ``auroc_labels``)."""

    def compute(self) -> torch.Tensor:
        return self.defined().sum().float()


def task_metrics(task: TaskSpec) -> MetricCollection:
    """The default metric collection for a task's kind."""
    if task.kind == "binary":
        return MetricCollection(
            {
                "auroc": DefinedBinaryAUROC(),
                "accuracy": BinaryAccuracy(),
                "f1": BinaryF1Score(),
                "sensitivity": BinaryRecall(),
                "specificity": BinarySpecificity(),
            }
        )
    c = task.num_outputs
    if task.kind == "multiclass":
        return MetricCollection(
            {
                "auroc": DefinedMulticlassAUROC(c),
                "accuracy": MulticlassAccuracy(c, average="micro"),
                "f1": MulticlassF1Score(c, average="macro"),
            }
        )
    kw = {"num_labels": c, "ignore_index": IGNORE_INDEX}
    return MetricCollection(
        {
            "auroc": DefinedMacroAUROC(**kw),
            "auroc_labels": DefinedLabelCount(**kw),
            "accuracy": MultilabelAccuracy(average="micro", **kw),
            "f1": MultilabelF1Score(average="macro", **kw),
            "auroc_per_class": ClasswiseWrapper(
                MultilabelAUROC(average=None, **kw), labels=list(task.class_names), prefix="auroc_"
            ),
        },
        compute_groups=False,
    )


def prepare_for_metrics(
    task: TaskSpec, logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Probabilities and integer targets with unknown (NaN) labels removed; ``None`` if nothing is labelled.

    Args:
        task: the task spec.
        logits: ``[B, num_outputs]``.
        target: ``[B, num_outputs]`` (binary/multilabel) or ``[B]`` (multiclass), NaN = unknown.
    """
    logits = logits.detach().float()
    if task.kind == "binary":
        probs, target = torch.sigmoid(logits).view(-1), target.reshape(-1)
        keep = ~torch.isnan(target)
        return (probs[keep], target[keep].long()) if keep.any() else None
    if task.kind == "multiclass":
        target = target.reshape(-1)
        keep = ~torch.isnan(target)
        return (torch.softmax(logits, dim=1)[keep], target[keep].long()) if keep.any() else None
    target = target.view_as(logits)
    known = ~torch.isnan(target)
    rows = known.any(dim=1)
    if not rows.any():
        return None
    target = torch.where(known, target, torch.full_like(target, IGNORE_INDEX)).long()
    return torch.sigmoid(logits)[rows], target[rows]
