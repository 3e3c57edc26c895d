"""ldoctor.evaluation.bootstrap: the one patient bootstrap reproduces the benchmarks' earlier loops draw for draw.

The hard-coded numbers were produced by running the replaced code (``paired_bootstrap`` of
``benchmarks/lidc.py`` and the draw loop of ``run_bootstrap`` in ``benchmarks/drugrec.py``, commit 569972f) on
the synthetic inputs built below.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldoctor.evaluation import (
    both_classes_present,
    paired_bootstrap,
    patient_bootstrap_draws,
    patient_rows,
    resample_patients,
)


def synthetic_nodules(n_patients: int = 60, folds: int = 5, seed: int = 2024):
    """1-3 nodules per patient, patients dealt into folds, rows shuffled (first-appearance order matters)."""
    rng = np.random.default_rng(seed)
    rows_per_patient = rng.integers(1, 4, n_patients)
    groups = np.repeat([f"p{i:02d}" for i in range(n_patients)], rows_per_patient)
    strata = np.repeat(np.arange(n_patients) % folds, rows_per_patient)
    y = rng.integers(0, 2, groups.size).astype(float)
    a = y + rng.normal(0.0, 0.8, groups.size)
    b = y + rng.normal(0.0, 1.5, groups.size)
    order = rng.permutation(groups.size)
    return y[order], a[order], b[order], groups[order].tolist(), strata[order]


def synthetic_admissions(n_patients: int = 40, seed: int = 11) -> list[str]:
    """Subject id of each of 1-5 admissions per patient, rows shuffled."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([str(30000 + 17 * i) for i in range(n_patients)], rng.integers(1, 6, n_patients))
    return groups[rng.permutation(groups.size)].tolist()


def mean_jaccard(y: np.ndarray, predicted: np.ndarray) -> float:
    """Mean per-admission Jaccard of multi-hot drug sets ``[admissions, drugs]`` (empty union counts 0)."""
    intersection = (y.astype(bool) & predicted.astype(bool)).sum(axis=1)
    union = (y.astype(bool) | predicted.astype(bool)).sum(axis=1)
    return float(np.mean(np.where(union > 0, intersection / np.maximum(union, 1), 0.0)))


def test_resample_patients_draws_as_rng_choice_does():
    draws = resample_patients(np.random.default_rng(4), 13, 9)
    assert draws.tolist() == np.random.default_rng(4).choice(13, 9, replace=True).tolist()
    assert len(resample_patients(np.random.default_rng(0), 13)) == 13
    with pytest.raises(ValueError, match="cannot resample from 0 patients"):
        resample_patients(np.random.default_rng(0), 0)


def test_patient_rows_in_order_of_first_row():
    rows = patient_rows(["b", "a", "b", "c", "a"])
    assert [r.tolist() for r in rows] == [[0, 2], [1, 4], [3]]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "folds",
            {
                "difference": 0.1608624717693345,
                "ci95": [0.034061750704731976, 0.3113482654600301],
                "share_above_0": 0.99,
                "draws": 100,
            },
        ),
        (
            "one stratum",
            {
                "difference": 0.128129117259552,
                "ci95": [0.010029393231772927, 0.2558661750483559],
                "share_above_0": 0.9833333333333333,
                "draws": 300,
            },
        ),
        (
            "skipped draws",
            {
                "difference": 0.380952380952381,
                "ci95": [0.16666666666666663, 0.689166666666666],
                "share_above_0": 1.0,
                "draws": 134,
            },
        ),
    ],
)
def test_paired_bootstrap_reproduces_the_lidc_benchmark_numbers(case, expected):
    if case == "folds":
        y, a, b, groups, strata = synthetic_nodules()
        result = paired_bootstrap(y, a, b, groups, strata, draws=100, seed=0)
    elif case == "one stratum":
        y, a, b, groups, _ = synthetic_nodules()
        result = paired_bootstrap(y, a, b, groups, draws=300, seed=5)
    else:  # 8 patients in 2 folds: 66 of 200 draws hold one class in some fold and are skipped
        y, a, b, groups, strata = synthetic_nodules(n_patients=8, folds=2, seed=3)
        result = paired_bootstrap(y, a, b, groups, strata, draws=200, seed=1)
    assert result == expected


def test_paired_bootstrap_point_estimate_is_the_mean_over_strata():
    y, a, b, groups, strata = synthetic_nodules()
    per_fold = [
        roc_auc_score(y[strata == f], a[strata == f]) - roc_auc_score(y[strata == f], b[strata == f]) for f in range(5)
    ]
    result = paired_bootstrap(y, a, b, groups, strata, draws=20)
    assert result["difference"] == pytest.approx(np.mean(per_fold), abs=1e-12)
    assert result["ci95"][0] <= result["difference"] <= result["ci95"][1]
    same = paired_bootstrap(y, b, b, groups, strata, draws=20)
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0], "share_above_0": 0.0, "draws": 20}


def test_paired_bootstrap_of_a_per_admission_metric():
    rng = np.random.default_rng(0)
    groups = synthetic_admissions()
    y = rng.random((len(groups), 12)) < 0.3
    close = y ^ (rng.random(y.shape) < 0.05)  # 5 % of the drug decisions flipped
    far = y ^ (rng.random(y.shape) < 0.30)
    result = paired_bootstrap(y, close, far, groups, metric=mean_jaccard, valid=None, draws=200)
    assert result["difference"] == pytest.approx(mean_jaccard(y, close) - mean_jaccard(y, far), abs=1e-12)
    assert result["draws"] == 200 and result["share_above_0"] == 1.0
    assert 0 < result["ci95"][0] < result["difference"] < result["ci95"][1]


def test_patient_bootstrap_draws_reproduce_the_safedrug_protocol():
    groups = synthetic_admissions()
    for seed, digest, first, sizes in [
        (0, "49ba15718326debd", [66, 91, 46, 30, 68, 89, 121, 11], [86, 106, 121, 103, 77, 90, 101, 108, 100, 95]),
        (3, "3e48bac70cf04463", [60, 62, 97, 3, 90, 118, 7, 20], [99, 100, 101, 106, 88, 108, 100, 102, 106, 109]),
    ]:
        draws = patient_bootstrap_draws(groups, draws=10, fraction=0.8, seed=seed)
        text = "|".join(",".join(map(str, rows)) for rows in draws)
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == digest
        assert draws[0][:8].tolist() == first and [len(d) for d in draws] == sizes


def test_patient_bootstrap_draws_take_whole_patients():
    groups = synthetic_admissions()
    rows_of = {g: [i for i, h in enumerate(groups) if h == g] for g in set(groups)}
    for rows in patient_bootstrap_draws(groups, draws=3, fraction=0.5, seed=2):
        drawn, start = [], 0
        while start < len(rows):  # walk the draw patient by patient
            patient = groups[rows[start]]
            assert rows[start : start + len(rows_of[patient])].tolist() == rows_of[patient]
            drawn.append(patient)
            start += len(rows_of[patient])
        assert len(drawn) == round(0.5 * 40)


def test_bootstrap_errors_say_what_is_wrong():
    y, a, b, groups, strata = synthetic_nodules(n_patients=8, folds=2, seed=3)
    with pytest.raises(ValueError, match=r"same positive number of rows, got \{'y': 15, 'a': 14"):
        paired_bootstrap(y, a[:-1], b, groups)
    with pytest.raises(ValueError, match="undefined on a whole stratum"):
        paired_bootstrap(np.zeros_like(y), a, b, groups)
    tiny = np.array([0.0, 1.0]), np.array([0.2, 0.9]), np.array([0.4, 0.3])
    with pytest.raises(ValueError, match="all 1 draws were skipped"):
        paired_bootstrap(*tiny, ["p", "q"], draws=1, seed=0)  # seed 0 draws patient q twice: one class
    with pytest.raises(ValueError, match="draws no patient"):
        patient_bootstrap_draws(["p", "q"], draws=1, fraction=0.2, seed=0)
    assert both_classes_present(np.array([0, 1, 1])) and not both_classes_present(np.ones(3))
