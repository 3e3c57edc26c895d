"""Label statistics of a training split (class balance for weighted losses)."""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


def positive_weights(labels: np.ndarray, class_names: list[str] | None = None) -> torch.Tensor:
    """Per-class positive weight ``#negative / #positive`` for ``BCEWithLogitsLoss(pos_weight=...)``.

    NaN (unknown) entries are ignored. A class without positives or without negatives gets weight 1.0
    (logged), so the loss stays finite.

    Args:
        labels: ``[N, C]`` 0/1 labels of the training split, NaN = unknown.
        class_names: ``C`` names for the log message.

    Returns:
        ``float32 [C]``.

    Example:
        >>> positive_weights(np.array([[1.0], [0.0], [0.0], [np.nan]])).tolist()
        [2.0]
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [N, C], got shape {labels.shape}")
    known = ~np.isnan(labels)
    positive = np.where(known, labels, 0.0).sum(axis=0)
    negative = known.sum(axis=0) - positive
    weights = np.ones(labels.shape[1])
    ok = (positive > 0) & (negative > 0)
    weights[ok] = negative[ok] / positive[ok]
    for c in np.flatnonzero(~ok):
        name = class_names[c] if class_names else f"class_{c}"
        log.warning("pos_weight of %s set to 1.0: %d positive, %d negative training labels", name,
                    int(positive[c]), int(negative[c]))
    return torch.tensor(weights, dtype=torch.float32)
