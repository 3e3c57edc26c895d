"""FeatureStack: a feature regression fitted on training cases, stacked with an image model on validation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ldoctor.evaluation.stacking import FeatureStack, logit


def cases(n: int, seed: int):
    """Label = sign(a + b + noise); the features see ``b`` (badly scaled) and noise, the image model sees ``a``."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (a + b + 0.5 * rng.normal(size=n) > 0).astype(float)
    features = np.c_[100.0 + 30.0 * b, rng.normal(size=n), rng.normal(size=n) * 5]
    image = 1.0 / (1.0 + np.exp(-2.0 * a))
    return features, image, y


def test_matches_scikit_learn_fitted_by_hand():
    x, _, y = cases(300, 0)
    xv, pv, yv = cases(150, 1)
    stack = FeatureStack.fit(x, y, pv, xv, yv, ["size", "noise", "loud_noise"])
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x, y)
    np.testing.assert_allclose(stack.feature_probs(xv), reference.predict_proba(xv)[:, 1], rtol=1e-6)
    both = np.c_[logit(pv), reference.decision_function(xv)]
    stacker = LogisticRegression(max_iter=5000).fit(both, yv)
    np.testing.assert_allclose(stack.predict(pv, xv), stacker.predict_proba(both)[:, 1], rtol=1e-5)


def test_stack_beats_each_part_when_they_see_different_things():
    x, _, y = cases(400, 0)
    xv, pv, yv = cases(300, 1)
    xt, pt, yt = cases(2000, 2)
    stack = FeatureStack.fit(x, y, pv, xv, yv)
    stacked, features_only, image_only = (
        roc_auc_score(yt, s) for s in (stack.predict(pt, xt), stack.feature_probs(xt), pt)
    )
    assert stacked > max(features_only, image_only) + 0.05
    assert min(stack.stack_coef) > 0.5


def test_a_useless_image_model_gets_little_weight():
    x, _, y = cases(400, 0)
    xv, _, yv = cases(300, 1)
    xt, _, yt = cases(2000, 2)
    rng = np.random.default_rng(3)
    stack = FeatureStack.fit(x, y, rng.uniform(size=300), xv, yv)
    assert abs(stack.stack_coef[0]) < 0.3 < stack.stack_coef[1]
    stacked = roc_auc_score(yt, stack.predict(rng.uniform(size=2000), xt))
    assert stacked == pytest.approx(roc_auc_score(yt, stack.feature_probs(xt)), abs=0.02)


def test_json_round_trip(tmp_path):
    x, _, y = cases(200, 0)
    xv, pv, yv = cases(100, 1)
    stack = FeatureStack.fit(x, y, pv, xv, yv)
    stack.save(tmp_path / "stack.json")
    restored = FeatureStack.load(tmp_path / "stack.json")
    np.testing.assert_array_equal(restored.predict(pv, xv), stack.predict(pv, xv))
    (tmp_path / "bad.json").write_text('{"feature_names": []}')
    with pytest.raises(ValueError, match="bad.json: not a FeatureStack"):
        FeatureStack.load(tmp_path / "bad.json")


def test_bad_input_is_named():
    x, _, y = cases(100, 0)
    xv, pv, yv = cases(50, 1)
    with pytest.raises(ValueError, match="validation labels must hold both 0 and 1"):
        FeatureStack.fit(x, y, pv, xv, np.ones_like(yv))
    with pytest.raises(ValueError, match=r"val_features must be \[N, 3\]"):
        FeatureStack.fit(x, y, pv, xv[:, :2], yv)
    with pytest.raises(ValueError, match="val_image_probs has 49 rows, expected 50"):
        FeatureStack.fit(x, y, pv[:49], xv, yv)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="train_features holds a non-finite value"):
        FeatureStack.fit(bad, y, pv, xv, yv)
    with pytest.raises(ValueError, match="2 feature names for 3 columns"):
        FeatureStack.fit(x, y, pv, xv, yv, ["a", "b"])


def test_stacking_callback_reads_soft_targets_on_their_side_of_one_half():
    from ldoctor.callbacks.feature_stacking import binary_labels

    kept, y = binary_labels(np.array([0.0, 1.0, 0.125, 0.875, 0.5, np.nan]))
    assert kept.tolist() == [True, True, True, True, False, False]
    assert y[kept].tolist() == [0.0, 1.0, 0.0, 1.0]
