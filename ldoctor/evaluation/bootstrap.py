"""The project's one bootstrap: resample whole patients with replacement, never single rows.

Rows of one patient (nodules, admissions, images) are correlated, so every draw takes a patient with all of
its rows. :func:`paired_bootstrap` compares two models scored on the same rows (the interval of a difference);
:func:`patient_bootstrap_draws` gives the row indices of each draw for protocols that summarise every draw
themselves (SafeDrug's 10 draws of 80 % of the test patients).

Patients, and strata, are taken in the order of their first row, and every draw calls :func:`resample_patients`
once per stratum, so a seed gives the same draws as the benchmarks' earlier loops did.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

Metric = Callable[[np.ndarray, np.ndarray], float]
Valid = Callable[[np.ndarray], bool]
Groups = Sequence[Hashable] | np.ndarray
Strata = Sequence[Hashable] | np.ndarray | None


def resample_patients(rng: np.random.Generator, n_patients: int, size: int | None = None) -> np.ndarray:
    """Patient indices drawn uniformly with replacement.

    ``rng.integers(0, n, size)``, the same draws as ``rng.choice(n, size, replace=True)``.

    Args:
        rng: the random generator, advanced by the draw.
        n_patients: number of patients to draw from, ``>= 1``.
        size: number of draws; ``None`` draws ``n_patients`` (the classic bootstrap).

    Returns:
        ``[size]`` int64 indices in ``[0, n_patients)``.
    """
    if n_patients < 1:
        raise ValueError(f"cannot resample from {n_patients} patients; need at least one")
    return rng.integers(0, n_patients, n_patients if size is None else size)


def both_classes_present(y: np.ndarray) -> bool:
    """Whether binary labels ``[rows]`` (0/1) hold both classes, as AUROC needs."""
    return bool(0 < y.sum() < y.size)


def patient_rows(groups: Groups) -> list[np.ndarray]:
    """Row indices of each patient, patients in order of their first row.

    Args:
        groups: patient id of every row, ``[rows]``.

    Returns:
        One int array per patient with the rows of that patient in increasing order.
    """
    members: dict[Hashable, list[int]] = {}
    for row, patient in enumerate(groups):
        members.setdefault(patient, []).append(row)
    return [np.asarray(rows, dtype=np.int64) for rows in members.values()]


def paired_bootstrap(
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    groups: Groups,
    strata: Strata = None,
    *,
    metric: Metric = roc_auc_score,
    valid: Valid | None = both_classes_present,
    draws: int = 2000,
    seed: int = 0,
) -> dict:
    """Mean over strata of ``metric(y, a) - metric(y, b)`` with a 95 % patient-bootstrap percentile interval.

    Each draw resamples whole patients with replacement inside every stratum (cross-validation folds), so each
    stratum keeps its patient count. A draw where some stratum fails ``valid`` (for AUROC: one class only) is
    skipped and not counted.

    Args:
        y: labels, ``[rows]`` (binary for AUROC) or ``[rows, labels]`` (e.g. multi-hot drugs).
        a: scores of model A on the same rows, ``[rows]`` or ``[rows, labels]``.
        b: scores of model B, shaped as ``a``.
        groups: patient id of every row, ``[rows]``.
        strata: stratum (fold) of every row, ``[rows]``; ``None``: one stratum. A patient should stay in one.
        metric: ``metric(y_rows, scores_rows) -> float``, higher is better; e.g. ``roc_auc_score`` or a mean
            per-admission Jaccard.
        valid: ``valid(y_rows)`` is true when ``metric`` is defined on those rows; ``None``: always defined.
        draws: number of bootstrap draws.
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``{"difference": float, "ci95": [low, high], "share_above_0": share of counted draws with A better,
        "draws": number of counted draws}``.

    Raises:
        ValueError: mismatched lengths, ``metric`` undefined on a whole stratum, or every draw skipped.
    """
    y, a, b = np.asarray(y), np.asarray(a), np.asarray(b)
    _check_lengths(y, a, b, groups, strata)
    strata_rows = _stratum_patients(groups, strata)
    full = [np.concatenate(patients) for patients in strata_rows]
    difference = _mean_difference(y, a, b, full, metric, valid)
    if difference is None:
        raise ValueError("the metric is undefined on a whole stratum (e.g. one class only); merge strata or check y")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        rows = [
            np.concatenate([patients[k] for k in resample_patients(rng, len(patients))]) for patients in strata_rows
        ]
        d = _mean_difference(y, a, b, rows, metric, valid)
        if d is not None:
            diffs.append(d)
    if not diffs:
        raise ValueError(f"all {draws} draws were skipped (metric undefined on a resampled stratum); add patients")
    diffs_array = np.asarray(diffs)
    return {
        "difference": difference,
        "ci95": [float(np.percentile(diffs_array, 2.5)), float(np.percentile(diffs_array, 97.5))],
        "share_above_0": float((diffs_array > 0).mean()),
        "draws": len(diffs),
    }


def patient_bootstrap_draws(groups: Groups, draws: int, fraction: float, seed: int) -> list[np.ndarray]:
    """Row indices of bootstrap draws of ``round(fraction * n_patients)`` patients with replacement.

    SafeDrug's protocol is ``draws=10, fraction=0.8`` on the test patients; the caller evaluates each draw.

    Args:
        groups: patient id of every row, ``[rows]``.
        draws: number of draws.
        fraction: share of the patients drawn per draw (``round`` is Python's, half to even).
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``draws`` int arrays; each lists, per drawn patient in draw order, all of that patient's rows in order.

    Raises:
        ValueError: when ``fraction * n_patients`` rounds to no patient.
    """
    patients = patient_rows(groups)
    size = round(fraction * len(patients))
    if size < 1:
        raise ValueError(f"fraction {fraction} of {len(patients)} patients draws no patient; raise the fraction")
    rng = np.random.default_rng(seed)
    return [np.concatenate([patients[k] for k in resample_patients(rng, len(patients), size)]) for _ in range(draws)]


def _stratum_patients(groups: Groups, strata: Strata) -> list[list[np.ndarray]]:
    """Per stratum (order of first row), per patient (order of first row in the stratum), the row indices."""
    labels = [0] * len(groups) if strata is None else list(strata)
    members: dict[Hashable, dict[Hashable, list[int]]] = {}
    for row, (patient, stratum) in enumerate(zip(groups, labels)):
        members.setdefault(stratum, {}).setdefault(patient, []).append(row)
    return [[np.asarray(rows, dtype=np.int64) for rows in patients.values()] for patients in members.values()]


def _mean_difference(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, rows_per_stratum: list[np.ndarray], metric: Metric, valid: Valid | None
) -> float | None:
    """Mean over strata of ``metric(y, a) - metric(y, b)`` on the given rows; ``None`` if one stratum is invalid."""
    values = []
    for rows in rows_per_stratum:
        if valid is not None and not valid(y[rows]):
            return None
        values.append(metric(y[rows], a[rows]) - metric(y[rows], b[rows]))
    return float(np.mean(values))


def _check_lengths(y: np.ndarray, a: np.ndarray, b: np.ndarray, groups: Groups, strata: Strata) -> None:
    lengths = {"y": len(y), "a": len(a), "b": len(b), "groups": len(groups)}
    if strata is not None:
        lengths["strata"] = len(strata)
    if len(set(lengths.values())) != 1 or lengths["y"] == 0:
        raise ValueError(f"y, a, b, groups (and strata) need the same positive number of rows, got {lengths}")
