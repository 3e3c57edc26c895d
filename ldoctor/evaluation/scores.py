"""Per-output scores that the benchmarks report beside published tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def per_class_auroc(probabilities: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """scikit-learn AUROC per output; NaN where the labels hold one class only (or none is known).

    Args:
        probabilities: ``[N, C]`` predicted probabilities.
        labels: ``[N, C]`` 0/1 labels, NaN = unknown (left out of that output's AUROC).
        names: ``C`` output names, the keys of the result in order.
    """
    scores = {}
    for c, name in enumerate(names):
        known = ~np.isnan(labels[:, c])
        y = labels[known, c]
        scores[name] = float(roc_auc_score(y, probabilities[known, c])) if 0 < y.sum() < len(y) else math.nan
    return scores
