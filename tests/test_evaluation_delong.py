"""ldoctor.evaluation.delong: the midrank DeLong test against a brute-force pairwise implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldoctor.evaluation import DeLongResult, delong_auroc_variance, delong_components, delong_paired


def brute_force_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong 1988 structural components from the ``[positives, negatives]`` comparison matrix (ties 1/2)."""
    pos, neg = scores[y == 1], scores[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def sample_covariance(u: np.ndarray, v: np.ndarray) -> float:
    return float(((u - u.mean()) * (v - v.mean())).sum() / (len(u) - 1))


def brute_force_covariance(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[[var a, cov], [cov, var b]]`` = S10 / m + S01 / n, summed by hand."""
    (v10_a, v01_a), (v10_b, v01_b) = brute_force_components(y, a), brute_force_components(y, b)
    m, n = len(v10_a), len(v01_a)
    pairs = [((v10_a, v01_a), (v10_a, v01_a)), ((v10_a, v01_a), (v10_b, v01_b)), ((v10_b, v01_b), (v10_b, v01_b))]
    var_a, cov, var_b = (sample_covariance(p[0], q[0]) / m + sample_covariance(p[1], q[1]) / n for p, q in pairs)
    return np.array([[var_a, cov], [cov, var_b]])


def tied_data(seed: int, cases: int = 120, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated score vectors rounded to one decimal, so many scores tie."""
    rng = np.random.default_rng(seed)
    y = (rng.random(cases) < 0.4).astype(int)
    shared = rng.normal(size=cases)
    a = np.round(signal * y + shared + 0.5 * rng.normal(size=cases), 1)
    b = np.round(0.5 * signal * y + shared + 0.8 * rng.normal(size=cases), 1)
    return y, a, b


@pytest.mark.parametrize(("seed", "cases"), [(0, 120), (1, 37), (2, 300), (3, 9)])
def test_components_match_the_pairwise_definition(seed, cases):
    y, a, _ = tied_data(seed, cases)
    auroc, v10, v01 = delong_components(y, a)
    expected_v10, expected_v01 = brute_force_components(y, a)
    np.testing.assert_allclose(v10, expected_v10, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v01, expected_v01, rtol=0, atol=1e-12)
    assert auroc == pytest.approx(roc_auc_score(y, a), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variance_and_paired_test_match_the_pairwise_definition(seed):
    y, a, b = tied_data(seed)
    covariance = brute_force_covariance(y, a, b)
    auroc, variance = delong_auroc_variance(y, a)
    assert auroc == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert variance == pytest.approx(covariance[0, 0], rel=1e-10)
    result = delong_paired(y, a, b)
    std_error = math.sqrt(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = roc_auc_score(y, a) - roc_auc_score(y, b)
    assert result.auroc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert result.difference == pytest.approx(difference, abs=1e-12)
    assert result.std_error == pytest.approx(std_error, rel=1e-10)
    assert result.z == pytest.approx(difference / std_error, rel=1e-10)
    assert result.p_value == pytest.approx(math.erfc(abs(difference / std_error) / math.sqrt(2)), rel=1e-9)
    assert result.ci95 == pytest.approx(
        (difference - 1.959963984540054 * std_error, difference + 1.959963984540054 * std_error), rel=1e-9
    )
    narrower = delong_paired(y, a, b, alpha=0.5).ci95
    assert narrower == pytest.approx(
        (difference - 0.6744897501960817 * std_error, difference + 0.6744897501960817 * std_error), rel=1e-9
    )


def test_identical_models_differ_by_nothing():
    y, a, _ = tied_data(4)
    result = delong_paired(y, a, a.copy())
    assert result == DeLongResult(result.auroc_a, result.auroc_a, 0.0, 0.0, 0.0, 1.0, (0.0, 0.0))
    perfect = y + 0.1 * np.arange(len(y)) / len(y)  # both separate the classes: AUROC 1, no variance
    assert delong_paired(y, perfect, 2 * perfect).p_value == 1.0


def test_a_clearly_better_model_has_a_small_p_value():
    y, a, b = tied_data(5, cases=400, signal=2.5)
    rng = np.random.default_rng(5)
    noise = rng.normal(size=len(y))
    result = delong_paired(y, a, noise)
    assert result.auroc_a > 0.9 and abs(result.auroc_b - 0.5) < 0.1
    assert result.p_value < 1e-10 and result.ci95[0] > 0.3
    assert delong_paired(y, noise, a).z == pytest.approx(-result.z)


def test_variance_agrees_with_a_bootstrap_over_cases():
    y, a, _ = tied_data(6, cases=300)
    rng = np.random.default_rng(0)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aurocs = []
    for _ in range(1000):  # resample positives and negatives separately, as DeLong's variance conditions on m, n
        rows = np.concatenate([rng.choice(positives, len(positives)), rng.choice(negatives, len(negatives))])
        aurocs.append(roc_auc_score(y[rows], a[rows]))
    _, variance = delong_auroc_variance(y, a)
    assert variance == pytest.approx(np.var(aurocs, ddof=1), rel=0.15)


def test_bad_inputs_are_named():
    y, a, b = tied_data(7, cases=20)
    with pytest.raises(ValueError, match="AUROC needs both classes, got 20 cases all labelled 1"):
        delong_paired(np.ones(20, dtype=int), a, b)
    with pytest.raises(ValueError, match="b hold 1 NaN values"):
        delong_paired(y, a, np.where(np.arange(20) == 3, np.nan, b))
    with pytest.raises(ValueError, match=r"a must have shape \[cases\] = \(20,\) like the labels, got \(19,\)"):
        delong_paired(y, a[:-1], b)
    with pytest.raises(ValueError, match=r"labels must be 0/1, got values \[0, 1, 2\]"):
        delong_components(np.where(np.arange(20) == 0, 2, y), a)
    with pytest.raises(ValueError, match="labels must be one-dimensional"):
        delong_components(y[:, None], a)
    with pytest.raises(ValueError, match="at least 2 positives and 2 negatives, got 1 and 3"):
        delong_auroc_variance(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="alpha must be in"):
        delong_paired(y, a, b, alpha=1.0)
