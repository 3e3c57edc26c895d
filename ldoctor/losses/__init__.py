"""Per-task losses (masked, NaN = unknown) and the weighting strategies that combine them.

- :mod:`ldoctor.losses.base`: :class:`TaskLoss`, what a task loss provides;
- :mod:`ldoctor.losses.masked`: masked BCE / cross-entropy, the defaults by task kind;
- :mod:`ldoctor.losses.drug`: the ``drug`` task's BCE + multilabel margin + DDI penalty;
- :mod:`ldoctor.losses.weighting`: equal, static, uncertainty, DWA, GradNorm and PCGrad weighting, one file each.
"""

from __future__ import annotations

from ldoctor.losses.base import TaskLoss
from ldoctor.losses.drug import DrugLoss
from ldoctor.losses.masked import MaskedBCEWithLogits, MaskedCrossEntropy, TaskLossCallable, default_task_loss
from ldoctor.losses.weighting import (
    DWA,
    EqualWeighting,
    GradNorm,
    LossWeighting,
    PCGrad,
    StaticWeighting,
    UncertaintyWeighting,
    WeightingCallable,
)

__all__ = [
    "DWA",
    "DrugLoss",
    "EqualWeighting",
    "GradNorm",
    "LossWeighting",
    "MaskedBCEWithLogits",
    "MaskedCrossEntropy",
    "PCGrad",
    "StaticWeighting",
    "TaskLoss",
    "TaskLossCallable",
    "UncertaintyWeighting",
    "WeightingCallable",
    "default_task_loss",
]
