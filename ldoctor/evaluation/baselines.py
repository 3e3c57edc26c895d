"""Baselines every benchmark places beside the model: regressions on the inputs the labels depend on."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def logistic_regression_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Positive-class probabilities ``[N_test]`` of a standardised L2 logistic regression (``C=1``) fitted on
    ``x_train [N, K]`` and binary ``y_train [N]``."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    return model.predict_proba(x_test)[:, 1]


def one_vs_rest_logistic(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Multilabel probabilities ``[N_test, D]``: an unscaled L2 logistic regression (``C=1``) per output on
    ``x_train [N, K]`` (e.g. multi-hot codes); an output constant in training gets its training rate."""
    probs = np.tile(y_train.mean(axis=0), (len(x_test), 1))
    for d in range(y_train.shape[1]):
        if 0 < y_train[:, d].sum() < len(y_train):
            model = LogisticRegression(C=1.0, max_iter=2000)
            probs[:, d] = model.fit(x_train, y_train[:, d]).predict_proba(x_test)[:, 1]
    return probs
