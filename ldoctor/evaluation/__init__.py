"""Statistics shared by the benchmarks and the update gate.

Submodules:

* :mod:`ldoctor.evaluation.splits`: the one patient splitter (seeded splits, patient-grouped K folds, records
  sent after their patient, a disjointness guard).
* :mod:`ldoctor.evaluation.bootstrap`: the one bootstrap over patients (paired difference of a metric with a
  percentile interval, row indices of SafeDrug-style draws).
* :mod:`ldoctor.evaluation.delong`: DeLong's test for two correlated AUROCs on the same cases.
* :mod:`ldoctor.evaluation.stacking`: an image model stacked with a feature regression, weighted on held-out
  cases (:class:`~ldoctor.evaluation.stacking.FeatureStack`).
"""

from __future__ import annotations

from ldoctor.evaluation.bootstrap import (
    both_classes_present,
    paired_bootstrap,
    patient_bootstrap_draws,
    patient_rows,
    resample_patients,
)
from ldoctor.evaluation.delong import DeLongResult, delong_auroc_variance, delong_components, delong_paired
from ldoctor.evaluation.splits import assign_records, check_patient_disjoint, patient_folds, split_patients
from ldoctor.evaluation.stacking import FeatureStack

__all__ = [
    "DeLongResult",
    "FeatureStack",
    "assign_records",
    "both_classes_present",
    "check_patient_disjoint",
    "delong_auroc_variance",
    "delong_components",
    "delong_paired",
    "paired_bootstrap",
    "patient_bootstrap_draws",
    "patient_folds",
    "patient_rows",
    "resample_patients",
    "split_patients",
]
