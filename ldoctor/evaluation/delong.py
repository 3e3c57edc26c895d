"""DeLong's test for two correlated AUROCs measured on the same cases.

DeLong, DeLong & Clarke-Pearson, "Comparing the areas under two or more correlated receiver operating
characteristic curves: a nonparametric approach", Biometrics 44:837-845, 1988: the AUROC is a two-sample
U-statistic whose variance (and covariance between two models on the same cases) follows from the structural
components ``V10`` (one per positive case) and ``V01`` (one per negative case). The components are computed with
the midrank algorithm of Sun & Xu, "Fast implementation of DeLong's algorithm for comparing the areas under
correlated receiver operating characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393, 2014,
in ``O(n log n)`` instead of comparing every positive-negative pair. Ties count one half.

The test treats cases as independent; with several rows per patient, use the patient bootstrap
(:func:`ldoctor.evaluation.bootstrap.paired_bootstrap`) instead.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1, 0, 1])
    >>> result = delong_paired(y, np.array([0.1, 0.3, 0.7, 0.9, 0.2, 0.6]), np.array([0.5, 0.1, 0.4, 0.8, 0.6, 0.3]))
    >>> result.auroc_a, round(result.auroc_b, 4)
    (1.0, 0.5556)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class DeLongResult:
    """Paired comparison of two AUROCs on the same cases.

    Attributes:
        auroc_a: AUROC of model A.
        auroc_b: AUROC of model B.
        difference: ``auroc_a - auroc_b``.
        std_error: DeLong standard error of the difference.
        z: ``difference / std_error`` (0 when both are 0).
        p_value: two-sided p-value of "no difference" under the normal approximation.
        ci95: normal confidence interval of the difference at the requested level (95 % by default).
    """

    auroc_a: float
    auroc_b: float
    difference: float
    std_error: float
    z: float
    p_value: float
    ci95: tuple[float, float]


def delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC and DeLong's structural components of one model, by midranks (Sun & Xu 2014).

    ``V10[i]`` is the share of negatives that positive ``i`` outscores, ``V01[j]`` the share of positives that
    outscore negative ``j`` (ties count one half); both average to the AUROC.

    Args:
        y: binary labels ``[cases]`` (0/1 or bool), both classes present.
        scores: model scores ``[cases]``, higher meaning positive; no NaN.

    Returns:
        ``(auroc, V10 [positives], V01 [negatives])``.

    Raises:
        ValueError: length mismatch, labels other than 0/1, one class only, or NaN scores.
    """
    positive = _check_labels(y)
    return _components(positive, _check_scores(scores, len(positive), "scores"))


def delong_auroc_variance(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUROC of one model and DeLong's estimate of its variance.

    ``var = S10 / m + S01 / n`` with ``S10``, ``S01`` the sample variances (``ddof=1``) of the structural
    components over the ``m`` positives and ``n`` negatives.

    Args:
        y: binary labels ``[cases]``, both classes present.
        scores: model scores ``[cases]``, no NaN.

    Returns:
        ``(auroc, variance)``; the variance of an AUROC (squared AUROC units).

    Raises:
        ValueError: as :func:`delong_components`, or fewer than 2 positives or 2 negatives.
    """
    auroc, v10, v01 = delong_components(y, scores)
    return auroc, float(_component_covariance([v10], [v01])[0, 0])


def delong_paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> DeLongResult:
    """DeLong's test of ``AUROC(a) == AUROC(b)`` for two models scored on the same cases.

    Args:
        y: binary labels ``[cases]``, both classes present.
        a: scores of model A ``[cases]``, no NaN.
        b: scores of model B ``[cases]``, no NaN.
        alpha: the interval covers ``1 - alpha`` (0.05: 95 %).

    Returns:
        The two AUROCs, their difference with standard error, ``z``, two-sided p-value and normal interval.

    Raises:
        ValueError: length mismatch, bad labels, NaN scores, fewer than 2 cases of a class or ``alpha`` outside
            ``(0, 1)``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    positive = _check_labels(y)
    auroc_a, v10_a, v01_a = _components(positive, _check_scores(a, len(positive), "a"))
    auroc_b, v10_b, v01_b = _components(positive, _check_scores(b, len(positive), "b"))
    cov = _component_covariance([v10_a, v10_b], [v01_a, v01_b])
    difference = auroc_a - auroc_b
    std_error = math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    z, p_value = _z_test(difference, std_error)
    half_width = float(norm.ppf(1 - alpha / 2)) * std_error
    return DeLongResult(
        auroc_a, auroc_b, difference, std_error, z, p_value, (difference - half_width, difference + half_width)
    )


def _components(positive: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(auroc, V10, V01)`` from checked inputs: midranks among all cases minus midranks within the class."""
    pos, neg = scores[positive], scores[~positive]
    m, n = len(pos), len(neg)
    ranks_all = rankdata(np.concatenate([pos, neg]))
    v10 = (ranks_all[:m] - rankdata(pos)) / n  # negatives below positive i, ties 1/2
    v01 = 1.0 - (ranks_all[m:] - rankdata(neg)) / m  # positives above negative j, ties 1/2
    return float(v10.mean()), v10, v01


def _component_covariance(v10: list[np.ndarray], v01: list[np.ndarray]) -> np.ndarray:
    """DeLong covariance ``[models, models]`` of the AUROCs: ``S10 / m + S01 / n`` (sample covariances, ddof 1)."""
    m, n = len(v10[0]), len(v01[0])
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs at least 2 positives and 2 negatives, got {m} and {n}")
    return np.atleast_2d(np.cov(np.stack(v10), ddof=1)) / m + np.atleast_2d(np.cov(np.stack(v01), ddof=1)) / n


def _z_test(difference: float, std_error: float) -> tuple[float, float]:
    """``(z, two-sided p)``; a zero standard error gives ``(0, 1)`` for no difference, ``(+-inf, 0)`` otherwise."""
    if std_error == 0:
        return (0.0, 1.0) if difference == 0 else (math.copysign(math.inf, difference), 0.0)
    z = difference / std_error
    return z, float(2 * norm.sf(abs(z)))


def _check_labels(y: np.ndarray) -> np.ndarray:
    """Boolean mask of the positives ``[cases]`` after checking the labels."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional [cases], got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got values {np.unique(y)[:5].tolist()}")
    positive = y.astype(bool)
    if positive.all() or not positive.any():
        raise ValueError(f"AUROC needs both classes, got {len(y)} cases all labelled {int(y[0]) if len(y) else '-'}")
    return positive


def _check_scores(scores: np.ndarray, n_cases: int, name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (n_cases,):
        raise ValueError(f"{name} must have shape [cases] = ({n_cases},) like the labels, got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{name} hold {int(np.isnan(scores).sum())} NaN values; AUROC needs a score for every case")
    return scores
