"""Calibrated probabilities and operating thresholds, fitted on validation data, per output column.

What a clinician-facing report needs per finding: a calibrated probability, the operating threshold chosen on
validation with its validation sensitivity and specificity, and the validation curve of (threshold, sensitivity,
specificity) for a slider. Binary and multilabel outputs only (one sigmoid per column); labels are 0/1 with NaN for
unknown, and an unknown label is left out of every fit and statistic of its column.

* :func:`expected_calibration_error`: ECE with equal-width bins (Guo et al. 2017).
* :class:`Calibration`: temperature scaling (:func:`fit_temperature`, Guo et al. 2017) or isotonic regression
  (:func:`fit_isotonic`, scikit-learn's) per column, saved as plain lists (:meth:`Calibration.to_dict`), so that it
  travels in a checkpoint read with ``torch.load(weights_only=True)``.
* :func:`choose_threshold` and :func:`operating_curve`: operating points on the calibrated probabilities, a case
  being positive when ``probability >= threshold``.
* :func:`fit_operating_points`: all of it for one task, as the plain dict that
  :class:`~ldoctor.callbacks.OperatingPoints` stores in checkpoints.

Reference: C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.

Example:
    >>> choose_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])  # J = 0.5 at 0.35 and at 0.8: the higher wins
    OperatingPoint(threshold=0.8, sensitivity=0.5, specificity=1.0, reason=None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.isotonic import IsotonicRegression

CalibrationMethod = Literal["temperature", "isotonic", "none"]
METHODS = ("temperature", "isotonic", "none")
#: Bins of :func:`expected_calibration_error` (Guo et al. 2017 use 15).
ECE_BINS = 15
#: Fitted temperatures are kept in ``[1 / TEMPERATURE_LIMIT, TEMPERATURE_LIMIT]``: on separable validation data the
#: likelihood keeps rising as ``T -> 0``, and
#: probabilities that round to 0 or 1 would lose their ranking.
TEMPERATURE_LIMIT = 20.0
YOUDEN = "youden"
SENSITIVITY = "sensitivity:"

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _as_columns(values: ArrayLike) -> np.ndarray:
    """``[N]`` or ``[N, K]`` -> float64 ``[N, K]``."""
    array = values.detach().cpu().double().numpy() if torch.is_tensor(values) else np.asarray(values, dtype=float)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def _both_classes(labels: np.ndarray) -> np.ndarray:
    """Per column of ``[N, K]`` 0/1 labels (NaN unknown): whether the known labels hold a positive and a negative."""
    known = ~np.isnan(labels)
    return ((labels == 1) & known).any(axis=0) & ((labels == 0) & known).any(axis=0)


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, bins: int = ECE_BINS) -> np.ndarray:
    """Expected calibration error of every column (Guo et al. 2017, ECE with ``bins`` equal-width bins).

    ``ECE = sum_m (n_m / n) * |mean(labels in bin m) - mean(probs in bin m)|``, bin ``m`` (1-based) holding the
    probabilities in ``((m - 1) / M, m / M]`` and 0 in the first bin; ``n`` counts the column's known labels. For a
    binary output this is Guo et al.'s accuracy-minus-confidence gap with the positive class's probability as the
    confidence, the form used for per-label calibration of multilabel outputs.

    Args:
        probs: ``[N]`` or ``[N, K]`` probabilities in ``[0, 1]``.
        labels: the same shape, 0/1 (a soft label in ``[0, 1]`` counts as its mean), NaN = unknown (left out).
        bins: ``M``, the number of equal-width bins over ``[0, 1]``.

    Returns:
        ``[K]`` float64, NaN for a column without a known label.
    """
    p, y = _as_columns(probs), _as_columns(labels)
    if p.shape != y.shape:
        raise ValueError(f"probs {p.shape} and labels {y.shape} must have the same shape")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    ece = np.full(p.shape[1], np.nan)
    for k in range(p.shape[1]):
        known = ~np.isnan(y[:, k])
        pk, yk = p[known, k], y[known, k]
        if not len(pk):
            continue
        index = np.clip(np.ceil(pk * bins).astype(int) - 1, 0, bins - 1)
        gap = np.abs(np.bincount(index, yk, minlength=bins) - np.bincount(index, pk, minlength=bins))
        ece[k] = gap.sum() / len(pk)  # sum_m (n_m / n) |mean y - mean p| = sum_m |sum y - sum p| / n
    return ece


def fit_temperature(logits: ArrayLike, labels: ArrayLike, max_iter: int = 100) -> torch.Tensor:
    """One temperature per column minimising the mean binary cross-entropy of ``logits / T`` (Guo et al. 2017).

    LBFGS on ``log T`` in float64, the columns' losses summed (each ``T`` only moves its own column's loss).
    A column whose known labels lack a class keeps ``T = 1``; ``T`` is clamped to
    ``[1 / TEMPERATURE_LIMIT, TEMPERATURE_LIMIT]``.

    Args:
        logits: ``[N]`` or ``[N, K]`` sigmoid logits.
        labels: the same shape, 0/1, NaN = unknown (left out).
        max_iter: LBFGS iterations.

    Returns:
        ``[K]`` float64 temperatures: calibrated probabilities are ``sigmoid(logits / T)``.
    """
    z, y = _as_columns(logits), _as_columns(labels)
    if z.shape != y.shape:
        raise ValueError(f"logits {z.shape} and labels {y.shape} must have the same shape")
    # Lightning's validate / test run under inference mode, where nothing can be differentiated
    with torch.inference_mode(False), torch.enable_grad():
        log_t = _fit_log_temperature(torch.from_numpy(z), torch.from_numpy(y), max_iter)
    limit = math.log(TEMPERATURE_LIMIT)
    return log_t.clamp(-limit, limit).exp()


def _fit_log_temperature(z: torch.Tensor, y: torch.Tensor, max_iter: int) -> torch.Tensor:
    """``[K]`` log-temperatures minimising the masked BCE of float64 logits ``z`` ``[N, K]`` / labels ``y``."""
    weight = (~torch.isnan(y) & torch.from_numpy(_both_classes(y.numpy()))).double()
    count, target = weight.sum(dim=0).clamp(min=1), torch.nan_to_num(y)
    log_t = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp(), target, reduction="none")
        total = ((loss * weight).sum(dim=0) / count).sum()
        total.backward()
        return total

    optimizer.step(closure)
    return log_t.detach()


def fit_isotonic(probs: ArrayLike, labels: ArrayLike) -> tuple[list[float], list[float]]:
    """Isotonic regression of the labels on the probabilities of one column, as its breakpoints.

    scikit-learn's ``IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip")``; its ``X_thresholds_`` and
    ``y_thresholds_`` reproduce its predictions with ``np.interp(p, x, y)`` (which clips at the ends too).

    Args:
        probs: ``[N]`` uncalibrated probabilities.
        labels: ``[N]`` 0/1, NaN = unknown (left out).

    Returns:
        ``(x, y)``: breakpoints, ``x`` increasing. The identity ``([0, 1], [0, 1])`` when the known labels lack a
        class (a constant would claim certainty).
    """
    p, y = _as_columns(probs)[:, 0], _as_columns(labels)[:, 0]
    known = ~np.isnan(y)
    if not _both_classes(y[known, None])[0]:
        return [0.0, 1.0], [0.0, 1.0]
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[known], y[known])
    return model.X_thresholds_.tolist(), model.y_thresholds_.tolist()


@dataclass
class Calibration:
    """A per-column map from logits to calibrated probabilities.

    Attributes:
        method: ``"temperature"`` (``sigmoid(logits / T_k)``), ``"isotonic"`` (``np.interp(sigmoid(logits), x_k,
            y_k)``) or ``"none"`` (``sigmoid(logits)``).
        temperatures: ``[K]`` temperatures (``"temperature"``).
        breakpoints: ``[K]`` of ``{"x": [...], "y": [...]}`` isotonic breakpoints on the probability scale
            (``"isotonic"``).
    """

    method: str = "none"
    temperatures: list[float] = field(default_factory=list)
    breakpoints: list[dict[str, list[float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Calibration.method must be one of {METHODS}, got {self.method!r}")
        if self.method == "temperature" and (not self.temperatures or min(self.temperatures) <= 0):
            raise ValueError(f"temperature calibration needs positive temperatures, got {self.temperatures}")
        if self.method == "isotonic" and not self.breakpoints:
            raise ValueError("isotonic calibration needs the breakpoints of every column")
        for k, points in enumerate(self.breakpoints):
            x, y = points.get("x", []), points.get("y", [])
            if not x or len(x) != len(y) or any(b < a for a, b in zip(x, x[1:])):
                raise ValueError(f"isotonic breakpoints of column {k} must be as many x as y, x increasing")

    @classmethod
    def fit(cls, logits: ArrayLike, labels: ArrayLike, method: CalibrationMethod = "temperature") -> Calibration:
        """Fit ``method`` on ``[N, K]`` logits and 0/1 labels (NaN = unknown)."""
        if method == "temperature":
            return cls(method, temperatures=fit_temperature(logits, labels).tolist())
        if method == "isotonic":
            probs, y = torch.sigmoid(torch.from_numpy(_as_columns(logits))).numpy(), _as_columns(labels)
            fitted = [fit_isotonic(probs[:, k], y[:, k]) for k in range(probs.shape[1])]
            return cls(method, breakpoints=[{"x": x, "y": y} for x, y in fitted])
        return cls(method)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities of ``[N, K]`` (or ``[N]`` for one column) logits: same shape, dtype and device."""
        if self.method == "temperature":
            return torch.sigmoid(logits / torch.tensor(self.temperatures, dtype=logits.dtype, device=logits.device))
        probs = torch.sigmoid(logits)
        if self.method == "none":
            return probs
        columns = _as_columns(probs)
        if columns.shape[1] != len(self.breakpoints):
            raise ValueError(f"logits have {columns.shape[1]} columns, the calibration {len(self.breakpoints)}")
        out = np.stack([np.interp(columns[:, k], b["x"], b["y"]) for k, b in enumerate(self.breakpoints)], axis=1)
        return torch.from_numpy(out).to(dtype=logits.dtype, device=logits.device).reshape(logits.shape)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, floats and strings (safe for ``torch.load(weights_only=True)`` and JSON)."""
        return {"method": self.method, "temperatures": [float(t) for t in self.temperatures],
                "breakpoints": [{"x": [float(v) for v in b["x"]], "y": [float(v) for v in b["y"]]}
                                for b in self.breakpoints]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Calibration:
        """The inverse of :meth:`to_dict`; a :class:`ValueError` names what is wrong with ``state``."""
        if not isinstance(state, dict) or "method" not in state:
            raise ValueError(f"not a Calibration dict (expected keys method, temperatures, breakpoints): {state!r:.200}")
        return cls(state["method"], list(state.get("temperatures", [])), list(state.get("breakpoints", [])))


@dataclass
class OperatingPoint:
    """A threshold chosen on validation and its validation sensitivity and specificity (``probability >= threshold``
    is positive). All ``None`` with a ``reason`` when none can be chosen."""

    threshold: float | None
    sensitivity: float | None
    specificity: float | None
    reason: str | None = None


def check_rule(rule: str) -> float | None:
    """Validate a threshold rule: ``"youden"`` (``None`` returned) or ``"sensitivity:S"`` (``S`` in ``(0, 1]``
    returned)."""
    if rule == YOUDEN:
        return None
    if rule.startswith(SENSITIVITY):
        try:
            target = float(rule.removeprefix(SENSITIVITY))
        except ValueError:
            target = math.nan
        if 0 < target <= 1:
            return target
    raise ValueError(f"threshold rule must be 'youden' or 'sensitivity:S' with S in (0, 1] (e.g. 'sensitivity:0.9'), "
                     f"got {rule!r}")


def _known(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Scores and bool labels of one column's known cases."""
    p, y = _as_columns(probs)[:, 0], _as_columns(labels)[:, 0]
    known = ~np.isnan(y)
    if not np.isin(y[known], (0.0, 1.0)).all():
        raise ValueError("operating points need 0/1 labels (NaN = unknown); harden soft labels first")
    return p[known], y[known] == 1


def one_class_reason(positive: np.ndarray) -> str | None:
    """Why no operating point can be chosen on these bool labels (``None`` when both classes are present)."""
    n_pos = int(positive.sum())
    if 0 < n_pos < len(positive):
        return None
    return (f"the validation labels hold {n_pos} positive and {len(positive) - n_pos} negative cases: no operating "
            "point can be chosen without both classes")


def _rates(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity ``TP / (TP + FN)`` and specificity ``TN / (TN + FP)`` at each threshold (``score >= t``)."""
    pos, neg = np.sort(scores[positive]), np.sort(scores[~positive])
    true_pos = len(pos) - np.searchsorted(pos, thresholds, side="left")
    true_neg = np.searchsorted(neg, thresholds, side="left")
    return true_pos / len(pos), true_neg / len(neg)


def choose_threshold(probs: ArrayLike, labels: ArrayLike, rule: str = YOUDEN) -> OperatingPoint:
    """The operating threshold of one column among its validation scores.

    Args:
        probs: ``[N]`` (calibrated) probabilities.
        labels: ``[N]`` 0/1, NaN = unknown (left out).
        rule: ``"youden"``: maximise Youden's J = sensitivity + specificity - 1, ties going to the higher threshold;
            ``"sensitivity:S"``: the highest threshold whose sensitivity is at least ``S``.

    Returns:
        The threshold (one of the scores) with its sensitivity and specificity; all ``None`` with a reason when the
        known labels lack a class.
    """
    target = check_rule(rule)
    scores, positive = _known(probs, labels)
    reason = one_class_reason(positive)
    if reason is not None:
        return OperatingPoint(None, None, None, reason)
    thresholds = np.unique(scores)
    sens, spec = _rates(scores, positive, thresholds)
    eligible = sens + spec >= (sens + spec).max() - 1e-12 if target is None else sens >= target - 1e-12
    best = int(np.flatnonzero(eligible)[-1])
    return OperatingPoint(float(thresholds[best]), float(sens[best]), float(spec[best]))


def operating_curve(probs: ArrayLike, labels: ArrayLike, points: int = 41) -> list[list[float]]:
    """Validation ``[threshold, sensitivity, specificity]`` rows of one column, thresholds ascending.

    The thresholds are 0, the unique scores (evenly subsampled by rank to ``points - 2`` when there are more) and 1.

    Args:
        probs: ``[N]`` (calibrated) probabilities.
        labels: ``[N]`` 0/1, NaN = unknown (left out).
        points: at most this many rows, ``>= 2``.

    Returns:
        ``[[t, sensitivity, specificity], ...]`` as plain floats; ``[]`` when the known labels lack a class
        (:func:`one_class_reason` says why).
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    scores, positive = _known(probs, labels)
    if one_class_reason(positive) is not None:
        return []
    unique = np.unique(scores)
    if len(unique) > points - 2:
        unique = unique[np.unique(np.round(np.linspace(0, len(unique) - 1, points - 2)).astype(int))]
    thresholds = np.unique(np.concatenate([[0.0], unique, [1.0]]))
    sens, spec = _rates(scores, positive, thresholds)
    return [[float(t), float(a), float(b)] for t, a, b in zip(thresholds, sens, spec)]


def _plain(values: np.ndarray) -> list[float | None]:
    """Floats with NaN as ``None``."""
    return [None if math.isnan(v) else float(v) for v in values]


def fit_operating_points(logits: ArrayLike, labels: ArrayLike, class_names: list[str],
                         method: CalibrationMethod = "temperature", rule: str = YOUDEN, points: int = 41,
                         bins: int = ECE_BINS) -> dict[str, Any]:
    """Calibration, per-column operating points and curves, and ECE before and after, of one task's validation data.

    The thresholds, curves and ``ece_after`` are computed on the calibrated probabilities of the same cases the
    calibration was fitted on: ``ece_after`` is in-sample (optimistic).

    Args:
        logits: ``[N, K]`` validation logits.
        labels: ``[N, K]`` 0/1, NaN = unknown.
        class_names: ``K`` column names.
        method, rule, points, bins: see :meth:`Calibration.fit`, :func:`choose_threshold`, :func:`operating_curve`,
            :func:`expected_calibration_error`.

    Returns:
        ``{"calibration": Calibration.to_dict(), "class_names", "columns": [{"name", "threshold", "sensitivity",
        "specificity", "curve", "reason"}], "ece_before": [K], "ece_after": [K], "n"}``: plain types only, ``None``
        for what is undefined; ``n`` counts the cases with at least one known label.
    """
    z, y = torch.from_numpy(_as_columns(logits)), _as_columns(labels)
    if len(class_names) != z.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {z.shape[1]} columns")
    calibration = Calibration.fit(z, y, method)
    probs = calibration.apply(z).numpy()
    columns = []
    for k, name in enumerate(class_names):
        point = choose_threshold(probs[:, k], y[:, k], rule)
        columns.append({"name": name, "threshold": point.threshold, "sensitivity": point.sensitivity,
                        "specificity": point.specificity, "curve": operating_curve(probs[:, k], y[:, k], points),
                        "reason": point.reason})
    return {"calibration": calibration.to_dict(), "class_names": list(class_names), "columns": columns,
            "ece_before": _plain(expected_calibration_error(torch.sigmoid(z).numpy(), y, bins)),
            "ece_after": _plain(expected_calibration_error(probs, y, bins)),
            "n": int((~np.isnan(y)).any(axis=1).sum())}
