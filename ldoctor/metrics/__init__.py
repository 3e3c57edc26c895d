"""Per-task metrics: :mod:`~ldoctor.metrics.classification` (by task kind, the default) and
:mod:`~ldoctor.metrics.drug` (medication recommendation, SafeDrug protocol)."""

from __future__ import annotations

from ldoctor.metrics.classification import IGNORE_INDEX, MetricsCallable, prepare_for_metrics, task_metrics
from ldoctor.metrics.drug import (
    EXPECTED_JACCARD,
    DrugCount,
    DrugDDIRate,
    DrugF1,
    DrugJaccard,
    DrugMetrics,
    DrugPRAUC,
    expected_jaccard_sets,
    predicted_sets,
)

__all__ = [
    "EXPECTED_JACCARD",
    "IGNORE_INDEX",
    "DrugCount",
    "DrugDDIRate",
    "DrugF1",
    "DrugJaccard",
    "DrugMetrics",
    "DrugPRAUC",
    "MetricsCallable",
    "expected_jaccard_sets",
    "predicted_sets",
    "prepare_for_metrics",
    "task_metrics",
]
