"""Label statistics of a training split: class balance for weighted losses, priors for head biases.

Labels are float arrays with NaN for unknown (``[N, C]`` for binary and multilabel tasks, ``[N]`` class indices
for multiclass), as every TaskDataModule's ``train_labels()`` returns them.
"""

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


def label_rates(labels: torch.Tensor | np.ndarray, kind: str, num_outputs: int) -> torch.Tensor:
    """Training prior of each output: the share of positive known labels (binary, multilabel ``[N, C]``) or the
    share of each class among the known class indices (multiclass ``[N]``); NaN = unknown.

    Returns:
        ``float32 [num_outputs]`` in [0, 1] (0.5 for an output without any known label).

    Example:
        >>> label_rates(np.array([[1.0], [0.0], [np.nan]]), "binary", 1).tolist()
        [0.5]
    """
    labels = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if kind == "multiclass":
        known = labels.reshape(-1)[~torch.isnan(labels.reshape(-1))].long()
        if known.numel() == 0:
            return torch.full((num_outputs,), 1.0 / num_outputs)
        return (torch.bincount(known, minlength=num_outputs).double() / known.numel()).float()
    labels = labels.reshape(len(labels), num_outputs)
    known = ~torch.isnan(labels)
    counts = known.sum(dim=0)
    positive = torch.where(known, labels, torch.zeros_like(labels)).sum(dim=0)
    return torch.where(counts > 0, positive / counts.clamp(min=1), torch.full_like(positive, 0.5)).float()
