"""Per-task metrics: :mod:`~ldoctor.metrics.classification` (by task kind, the default) and
:mod:`~ldoctor.metrics.drug` (medication recommendation, SafeDrug protocol; configs name
``ldoctor.metrics.DrugMetrics``)."""

from __future__ import annotations

from ldoctor.metrics.classification import MetricsCallable, prepare_for_metrics, task_metrics
from ldoctor.metrics.drug import DrugMetrics

__all__ = ["DrugMetrics", "MetricsCallable", "prepare_for_metrics", "task_metrics"]
