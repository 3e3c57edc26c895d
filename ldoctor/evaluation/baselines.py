"""Baselines every benchmark places beside the model: regressions on the inputs the labels depend on."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ldoctor.evaluation.multilabel import macro_auroc, with_folds


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


def _fit_per_finding(x: np.ndarray, y: np.ndarray, c: float, x_eval: np.ndarray) -> np.ndarray:
    """``[N_eval, C]`` probabilities of one L2 logistic regression per finding (inputs already standardised); a
    finding without both classes in ``y`` gets its training rate."""
    probs = np.tile(np.nanmean(y, axis=0), (len(x_eval), 1))
    for d in range(y.shape[1]):
        if 0 < y[:, d].sum() < len(y):
            model = LogisticRegression(C=c, max_iter=2000).fit(x, y[:, d])
            probs[:, d] = model.predict_proba(x_eval)[:, 1]
    return probs


def pixel_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   x_test: np.ndarray, c_grid: list[float]) -> tuple[np.ndarray, dict]:
    """Per-finding L2 logistic regression on standardised pixels, ``C`` chosen on validation, refitted on train +
    validation.

    Args:
        x_train: ``[N, P]`` pixels (any scale); ``y_train``: ``[N, C]`` 0/1 findings.
        x_val: ``[M, P]``; ``y_val``: ``[M, C]``: picks one ``C`` for all findings by macro AUROC over the findings
            with both classes in training and validation.
        x_test: ``[K, P]``.
        c_grid: inverse L2 strengths to try.

    Returns:
        ``[K, C]`` test probabilities and ``{"c": chosen C, "val_macro_auroc": {C: score}}``.
    """
    scaler = StandardScaler().fit(x_train)
    columns = [d for d in range(y_train.shape[1])
               if 0 < y_train[:, d].sum() < len(y_train) and 0 < y_val[:, d].sum() < len(y_val)]
    val_scores = {}
    for c in c_grid:
        probs = _fit_per_finding(scaler.transform(x_train), y_train[:, columns], c, scaler.transform(x_val))
        one_fold = with_folds(y_val[:, columns], np.zeros(len(y_val)))
        val_scores[c] = macro_auroc(one_fold, probs) if columns else float("nan")
    best = max(c_grid, key=lambda c: -np.inf if np.isnan(val_scores[c]) else val_scores[c])
    x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    scaler = StandardScaler().fit(x_all)
    probs = _fit_per_finding(scaler.transform(x_all), y_all, best, scaler.transform(x_test))
    return probs, {"c": best, "val_macro_auroc": {str(c): v for c, v in val_scores.items()}}
