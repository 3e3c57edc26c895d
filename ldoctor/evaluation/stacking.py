"""Stack an image model with a logistic regression on measured features, weighted on held-out cases.

A network trained on a few thousand cases fits its training set almost perfectly, so when it is trained
together with a side path on measured features (``TaskSpec.feature_names``), the training loss gives the side path
little to do and the measurements add nothing on new cases. Stacking (Wolpert 1992) weights the two by how well
each predicts cases *neither was trained on*:

1. a logistic regression on the standardised features is fitted on the training cases (12 numbers per nodule for
   the tumor task's radiomics: it barely overfits);
2. the image model is trained as usual (its checkpoint chosen on validation);
3. a logistic regression on the two models' logits is fitted on the validation cases.

:class:`FeatureStack` holds the coefficients of steps 1 and 3 as plain numbers: it saves to JSON (no pickle),
and ``predict`` needs only numpy.

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3)); y = (x[:, 0] + rng.normal(size=200) > 0).astype(float)
    >>> image = 1 / (1 + np.exp(-(x[:, 1] + 2 * (y - 0.5))))  # an image model that knows something else
    >>> stack = FeatureStack.fit(x[:100], y[:100], image[100:], x[100:], y[100:])
    >>> stack.predict(image[100:], x[100:]).shape
    (100,)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with ``p`` clipped to ``[1e-6, 1 - 1e-6]``."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _check(name: str, x: np.ndarray, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if not np.isfinite(x).all():
        raise ValueError(f"FeatureStack: {name} holds a non-finite value")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"FeatureStack: {name} has {x.shape[0]} rows, expected {rows}")
    if cols is not None and (x.ndim != 2 or x.shape[1] != cols):
        raise ValueError(f"FeatureStack: {name} must be [N, {cols}], got shape {x.shape}")
    return x


def _two_classes(name: str, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if not set(np.unique(y)) == {0.0, 1.0}:
        raise ValueError(f"FeatureStack: {name} labels must hold both 0 and 1, got {sorted(set(np.unique(y)))}")
    return y


@dataclass
class FeatureStack:
    """Validation-weighted stack of an image model's probabilities and a feature regression.

    Attributes:
        feature_names: the feature columns, in order.
        feature_mean, feature_std: training standardisation of the features.
        feature_coef, feature_intercept: the feature regression (on standardised features).
        stack_coef: weights of ``[logit(image probability), feature regression logit]``.
        stack_intercept: the stack's intercept.
    """

    feature_names: list[str]
    feature_mean: list[float]
    feature_std: list[float]
    feature_coef: list[float]
    feature_intercept: float
    stack_coef: list[float]
    stack_intercept: float

    @classmethod
    def fit(
        cls,
        train_features: np.ndarray,
        train_labels: np.ndarray,
        val_image_probs: np.ndarray,
        val_features: np.ndarray,
        val_labels: np.ndarray,
        feature_names: Sequence[str] | None = None,
        C: float = 1.0,
    ) -> FeatureStack:
        """Fit the feature regression on the training cases and the stack on the validation cases.

        Args:
            train_features: ``[N, K]`` features of the training cases.
            train_labels: ``[N]`` 0/1 labels.
            val_image_probs: ``[M]`` the image model's probabilities on the validation cases.
            val_features: ``[M, K]`` their features.
            val_labels: ``[M]`` their 0/1 labels.
            feature_names: ``K`` column names (default ``feature_0``, ...).
            C: inverse L2 strength of both regressions (scikit-learn's ``C``).

        Raises:
            ValueError: mismatched shapes, non-finite values, or a split with one class only.
        """
        x = _check("train_features", train_features)
        if x.ndim != 2:
            raise ValueError(f"FeatureStack: train_features must be [N, K], got shape {x.shape}")
        y = _two_classes("training", _check("train_labels", train_labels, rows=len(x)))
        xv = _check("val_features", val_features, cols=x.shape[1])
        yv = _two_classes("validation", _check("val_labels", val_labels, rows=len(xv)))
        pv = _check("val_image_probs", val_image_probs, rows=len(xv))
        names = list(feature_names) if feature_names is not None else [f"feature_{i}" for i in range(x.shape[1])]
        if len(names) != x.shape[1]:
            raise ValueError(f"FeatureStack: {len(names)} feature names for {x.shape[1]} columns")
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 0, std, 1.0)
        features = LogisticRegression(C=C, max_iter=5000).fit((x - mean) / std, y)
        feature_logit = features.decision_function((xv - mean) / std)
        stacker = LogisticRegression(C=C, max_iter=5000).fit(np.c_[logit(pv), feature_logit], yv)
        return cls(names, mean.tolist(), std.tolist(), features.coef_[0].tolist(), float(features.intercept_[0]),
                   stacker.coef_[0].tolist(), float(stacker.intercept_[0]))

    def feature_logit(self, features: np.ndarray) -> np.ndarray:
        """The feature regression's logits ``[N]`` for ``features`` ``[N, K]``."""
        x = _check("features", features, cols=len(self.feature_names))
        z = (x - np.asarray(self.feature_mean)) / np.asarray(self.feature_std)
        return z @ np.asarray(self.feature_coef) + self.feature_intercept

    def feature_probs(self, features: np.ndarray) -> np.ndarray:
        """The feature regression alone: probabilities ``[N]``."""
        return _sigmoid(self.feature_logit(features))

    def predict(self, image_probs: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Stacked probabilities ``[N]`` from the image model's probabilities ``[N]`` and the features ``[N, K]``."""
        x = _check("features", features, cols=len(self.feature_names))
        p = _check("image_probs", image_probs, rows=len(x))
        z = np.c_[logit(p), self.feature_logit(x)] @ np.asarray(self.stack_coef) + self.stack_intercept
        return _sigmoid(z)

    def save(self, path: str | Path) -> None:
        """Write the coefficients as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> FeatureStack:
        """Read a stack written by :meth:`save`."""
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a FeatureStack JSON file ({err})") from err
