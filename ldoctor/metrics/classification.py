"""Per-task metric collections by task kind (torchmetrics) and the masking that feeds them.

Logged names are ``{split}/{task}/{metric}``: ``auroc`` (macro for multilabel/multiclass), ``accuracy``,
``f1``; binary tasks add ``sensitivity`` and ``specificity``; multilabel tasks add ``auroc_{class}`` per class.

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

from ldoctor.tasks import TaskSpec

IGNORE_INDEX = -1

#: Config type of ``MultiTaskModule.metrics`` values: called with the task's spec.
MetricsCallable = Callable[[TaskSpec], MetricCollection]


def task_metrics(task: TaskSpec) -> MetricCollection:
    """The default metric collection for a task's kind."""
    if task.kind == "binary":
        return MetricCollection(
            {
                "auroc": BinaryAUROC(),
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
                "auroc": MulticlassAUROC(c, average="macro"),
                "accuracy": MulticlassAccuracy(c, average="micro"),
                "f1": MulticlassF1Score(c, average="macro"),
            }
        )
    kw = {"num_labels": c, "ignore_index": IGNORE_INDEX}
    return MetricCollection(
        {
            "auroc": MultilabelAUROC(average="macro", **kw),
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
