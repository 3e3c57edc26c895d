"""Multilabel AUROC across cross-validation folds, and which labels a test set can score.

Cross-validated predictions come from K models, each scoring on its own scale, so a label's AUROC counts only
(positive, negative) pairs of the same fold (:func:`within_fold_auroc`). The metrics take the labels with the
fold of each row as a last column (:func:`with_folds`), the shape :func:`~ldoctor.evaluation.bootstrap.
paired_bootstrap` resamples; with one fold they are the ordinary AUROCs.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata

from ldoctor.evaluation.delong import delong_paired


def within_fold_auroc(y_fold: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC per column counting only (positive, negative) pairs of the same fold: ``sum_k U_k / sum_k m_k n_k``.

    ``U_k`` is fold ``k``'s Mann-Whitney count (midranks, ties one half), ``m_k`` / ``n_k`` its positives and
    negatives: the chance that a positive outranks a negative of the same fold, i.e. the folds' AUROCs weighted by
    their pairs. Each fold's model scores on its own scale, so pairs across folds are not compared (that would
    penalise models whose scale drifts between folds). One fold: the ordinary AUROC, equal to scikit-learn's
    ``roc_auc_score``; written out because the bootstrap calls it thousands of times (a multilabel
    ``roc_auc_score`` takes ~16 ms here).

    Args:
        y_fold: ``[N, C + 1]``: 0/1 labels, and in the last column the fold of each row.
        scores: ``[N, C]`` (or ``[N]`` when ``C = 1``).

    Returns:
        ``[C]`` AUROCs; NaN where no fold holds both classes.
    """
    labels, fold = np.asarray(y_fold[:, :-1], dtype=bool), y_fold[:, -1]
    scores = np.asarray(scores, dtype=float).reshape(len(labels), -1)
    wins, pairs = np.zeros(labels.shape[1]), np.zeros(labels.shape[1])
    for k in np.unique(fold):
        rows = fold == k
        y, ranks = labels[rows], rankdata(scores[rows], axis=0)
        positives = y.sum(axis=0)
        wins += (ranks * y).sum(axis=0) - positives * (positives + 1) / 2.0
        pairs += positives * (len(y) - positives)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.maximum(pairs, 1), np.nan)


def macro_auroc(y_fold: np.ndarray, scores: np.ndarray) -> float:
    """Mean over columns of :func:`within_fold_auroc` (the bootstrap's metric)."""
    return float(np.mean(within_fold_auroc(y_fold, scores)))


def pairs_in_every_column(y_fold: np.ndarray) -> bool:
    """Whether every label column of ``y_fold [N, C + 1]`` has a positive and a negative in one fold."""
    labels, fold = y_fold[:, :-1], y_fold[:, -1]
    defined = np.zeros(labels.shape[1], dtype=bool)
    for k in np.unique(fold):
        positives = labels[fold == k].sum(axis=0)
        defined |= (positives > 0) & (positives < (fold == k).sum())
    return bool(defined.all())


def with_folds(y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """``[N, C + 1]``: labels ``[N, C]`` and the fold of each row as the last column (the metrics' input)."""
    return np.column_stack([y, folds]).astype(float)


def delong_within_folds(y: np.ndarray, a: np.ndarray, b: np.ndarray, folds: np.ndarray) -> float | None:
    """Two-sided p of "A and B have the same AUROC" for one finding (``y``, ``a``, ``b``: ``[N]``).

    DeLong's paired difference and its variance in every fold with at least 2 positives and 2 negatives, combined
    with the folds' pair weights (folds hold different patients: independent). One fold: DeLong's own p. ``None``
    when no fold qualifies. DeLong treats images as independent; images of one patient are not.
    """
    differences, variances, weights = [], [], []
    for k in np.unique(folds):
        rows = folds == k
        positives = int(y[rows].sum())
        if positives < 2 or rows.sum() - positives < 2:
            continue
        result = delong_paired(y[rows].astype(int), a[rows], b[rows])
        differences.append(result.difference)
        variances.append(result.std_error**2)
        weights.append(positives * (rows.sum() - positives))
    if not weights:
        return None
    w = np.asarray(weights, dtype=float) / sum(weights)
    difference, std_error = float(w @ differences), float(np.sqrt(w**2 @ variances))
    if std_error == 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * norm.sf(abs(difference) / std_error))


def scored_findings(labels: np.ndarray, min_positives: int) -> list[int]:
    """Columns of ``labels [N, 14]`` with at least ``min_positives`` positive images and one negative."""
    positives = np.nansum(labels, axis=0)
    return [c for c in range(labels.shape[1]) if positives[c] >= min_positives and positives[c] < len(labels)]
