"""Multilabel AUROC within cross-validation folds, checked against scikit-learn fold by fold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldoctor.evaluation.baselines import pixel_baseline
from ldoctor.evaluation.delong import delong_paired
from ldoctor.evaluation.multilabel import (
    delong_within_folds,
    macro_auroc,
    pairs_in_every_column,
    scored_findings,
    with_folds,
    within_fold_auroc,
)


def test_one_fold_is_scikit_learns_auroc_ties_included():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(60, 3))
    scores = np.round(rng.random((60, 3)), 1)  # many ties
    got = within_fold_auroc(with_folds(y, np.zeros(60)), scores)
    np.testing.assert_allclose(got, [roc_auc_score(y[:, c], scores[:, c]) for c in range(3)])
    assert macro_auroc(with_folds(y, np.zeros(60)), scores) == pytest.approx(np.mean(got))


def test_folds_are_weighted_by_their_pairs_and_never_compared_across():
    # fold 0: 2 positives x 2 negatives, perfectly ranked; fold 1: 1 x 3, ranked worst
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.0, 0.5, 0.6, 0.7])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # (4 pairs x 1.0 + 3 pairs x 0.0) / 7; pooled across folds it would differ
    assert within_fold_auroc(with_folds(y[:, None], folds), scores)[0] == pytest.approx(4 / 7)
    assert roc_auc_score(y, scores) != pytest.approx(4 / 7)
    # shifting one fold's scale changes nothing
    shifted = np.where(folds == 1, scores + 10, scores)
    assert within_fold_auroc(with_folds(y[:, None], folds), shifted)[0] == pytest.approx(4 / 7)


def test_a_label_without_pairs_is_nan_and_fails_the_validity_rule():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    y_fold = with_folds(y, np.zeros(4))
    assert np.isnan(within_fold_auroc(y_fold, np.random.default_rng(0).random((4, 2)))[1])
    assert not pairs_in_every_column(y_fold)
    assert pairs_in_every_column(with_folds(y[:, :1], np.zeros(4)))


def test_scored_findings_need_enough_positives_and_one_negative():
    y = np.zeros((10, 3))
    y[:5, 0] = 1  # 5 positives
    y[:4, 1] = 1  # 4
    y[:, 2] = 1   # no negative
    assert scored_findings(y, 5) == [0]
    assert scored_findings(y, 4) == [0, 1]


def test_delong_within_one_fold_is_delongs_p():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    a, b = y + rng.normal(0, 1, 80), y + rng.normal(0, 2, 80)
    assert delong_within_folds(y, a, b, np.zeros(80)) == pytest.approx(delong_paired(y, a, b).p_value)


def test_pixel_baseline_learns_a_pixel_signal_and_picks_c_on_validation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    y = np.column_stack([(x[:, 0] > 0), (x[:, 1] + 0.5 * rng.normal(size=300) > 0)]).astype(float)
    probs, choice = pixel_baseline(x[:150], y[:150], x[150:200], y[150:200], x[200:], [1e-4, 1.0])
    assert choice["c"] == 1.0 and set(choice["val_macro_auroc"]) == {"0.0001", "1.0"}
    assert roc_auc_score(y[200:, 0], probs[:, 0]) > 0.95
    assert roc_auc_score(y[200:, 1], probs[:, 1]) > 0.8
