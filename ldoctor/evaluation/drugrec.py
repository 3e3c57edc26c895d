"""Medication-recommendation evaluation (``drug`` task): per-admission scores, summaries and the baselines.

Metrics follow SafeDrug (Yang et al., IJCAI 2021): Jaccard, F1 and PRAUC per admission (:mod:`ldoctor.metrics.drug`),
DDI rate pooled over admissions, mean number of drugs. Summaries average over admissions, or per patient and then
over patients as SafeDrug's ``test`` routine does.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from ldoctor.evaluation.baselines import one_vs_rest_logistic
from ldoctor.metrics.drug import DrugCount, DrugF1, DrugJaccard, DrugPRAUC, predicted_sets

METRICS = ("jaccard", "prauc", "f1", "ddi_rate", "avg_drugs")


def admission_scores(
    predicted: torch.Tensor, scores: torch.Tensor, target: torch.Tensor, ddi: torch.Tensor | None
) -> dict[str, np.ndarray]:
    """Per-admission metric values ``{metric: [N]}`` (``ddi_*`` as pair counts, pooled later).

    Args:
        predicted: 0/1 predicted sets ``[N, D]``.
        scores: ranking scores ``[N, D]`` (for PRAUC).
        target: 0/1 true sets ``[N, D]``.
        ddi: ``[D, D]`` interaction matrix or ``None``.
    """
    out = {
        "jaccard": DrugJaccard().scores(predicted, target),
        "f1": DrugF1().scores(predicted, target),
        "prauc": DrugPRAUC().scores(scores, target),
        "avg_drugs": DrugCount().scores(predicted, target),
    }
    k = predicted.sum(dim=1)
    out["pairs"] = k * (k - 1) / 2
    out["interacting"] = (0.5 * ((predicted @ ddi) * predicted).sum(dim=1)) if ddi is not None else 0 * k
    return {key: value.double().numpy() for key, value in out.items()}


def summarise(
    values: dict[str, np.ndarray], rows: np.ndarray | None = None, patients: list[str] | None = None
) -> dict[str, float]:
    """Mean metrics over admissions (``patients=None``) or per patient then over patients (SafeDrug).

    Args:
        values: from ``admission_scores``.
        rows: admission indices to use (a bootstrap draw; repeats allowed); ``None`` = all.
        patients: each admission's patient id, for SafeDrug's patient-level averaging.
    """
    rows = np.arange(len(values["jaccard"])) if rows is None else rows
    result = {}
    for key in ("jaccard", "f1", "prauc", "avg_drugs"):
        v = values[key][rows]
        if patients is None:
            result[key] = float(np.nanmean(v))
        else:
            groups: dict[str, list[float]] = {}
            for r, value in zip(rows, v):
                groups.setdefault(patients[r], []).append(value)
            result[key] = float(np.nanmean([np.nanmean(g) for g in groups.values()]))
    pairs = values["pairs"][rows].sum()
    result["ddi_rate"] = float(values["interacting"][rows].sum() / pairs) if pairs > 0 else 0.0
    return result


def mean_std(runs: list[dict[str, float]]) -> dict[str, float]:
    """``{metric}_mean`` and ``{metric}_std`` (sample std; 0 for one run) of :func:`summarise` results."""
    out = {}
    for key in METRICS:
        values = [r[key] for r in runs]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


# ------------------------------------------------------------------------------------------- baselines
def multi_hot(samples: list[dict], vocabulary: list[str]) -> np.ndarray:
    """``[N, V]`` 0/1: codes of all admissions so far (codes outside the vocabulary are ignored)."""
    index = {c: i for i, c in enumerate(vocabulary)}
    x = np.zeros((len(samples), len(vocabulary)), dtype=np.float32)
    for row, sample in enumerate(samples):
        for admission in sample["history"]:
            x[row, [index[c] for c in admission if c in index]] = 1.0
    return x


def drug_labels(samples: list[dict], drugs: list[str]) -> np.ndarray:
    """``[N, D]`` 0/1: each sample's drugs (drugs outside ``drugs`` are ignored)."""
    index = {d: i for i, d in enumerate(drugs)}
    y = np.zeros((len(samples), len(drugs)), dtype=np.float32)
    for row, sample in enumerate(samples):
        y[row, [index[d] for d in sample["drugs"] if d in index]] = 1.0
    return y


def top_k_baseline(y_train: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The ``k`` most frequent training drugs for everyone; ``k`` maximises the training Jaccard."""
    freq = y_train.mean(axis=0)
    order = np.argsort(-freq, kind="stable")
    best_k, best = 1, -1.0
    for k in range(1, len(order) + 1):
        pred = np.zeros_like(freq)
        pred[order[:k]] = 1
        inter = (y_train * pred).sum(1)
        jac = float(np.mean(inter / ((y_train + pred) > 0).sum(1)))
        if jac > best:
            best_k, best = k, jac
    pred = np.zeros((n_test, len(freq)), dtype=np.float32)
    pred[:, order[:best_k]] = 1
    return pred, np.tile(freq, (n_test, 1)), best_k


def previous_admission_baseline(
    test: list[dict], drugs: list[str], fallback: np.ndarray, freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The drugs of the patient's previous kept admission; the top-k set for first admissions."""
    index = {d: i for i, d in enumerate(drugs)}
    pred = fallback.copy()
    previous: dict[str, list[str]] = {}
    for row, sample in enumerate(test):
        subject = sample["id"].split("/")[0]
        if subject in previous:
            pred[row] = 0
            pred[row, [index[d] for d in previous[subject] if d in index]] = 1
        previous[subject] = sample["drugs"]
    return pred, pred + freq[None] * 0.5


def baselines(
    train: list[dict], test: list[dict], drugs: list[str], codes: list[str], ddi: torch.Tensor | None,
    decision: float | str = 0.5,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-admission scores (:func:`admission_scores`) of three baselines fitted on the ``train`` samples and scored
    on the ``test`` samples (``patient_samples`` dicts: ``id``, ``history``, ``drugs``): the most frequent ``k``
    drugs, the previous admission's drugs, and a one-vs-rest logistic regression on the multi-hot codes.

    With a ``decision`` other than 0.5, the logistic regression is also scored with that decision
    (``logistic_regression_same_decision``), so a model never wins by its decision rule alone.
    """
    y_train, y_test = drug_labels(train, drugs), torch.from_numpy(drug_labels(test, drugs))
    top_pred, top_scores, _ = top_k_baseline(y_train, len(test))
    prev_pred, prev_scores = previous_admission_baseline(test, drugs, top_pred, y_train.mean(axis=0))
    lr_probs = one_vs_rest_logistic(multi_hot(train, codes), y_train, multi_hot(test, codes))
    out = {}
    for name, (pred, scores) in {
        "most_frequent_k": (top_pred, top_scores),
        "previous_admission": (prev_pred, prev_scores),
        "logistic_regression": ((lr_probs >= 0.5).astype(np.float32), lr_probs),
    }.items():
        out[name] = admission_scores(torch.from_numpy(pred).float(), torch.from_numpy(scores).float(), y_test, ddi)
    if decision != 0.5:
        lr = torch.from_numpy(lr_probs).float()
        out["logistic_regression_same_decision"] = admission_scores(predicted_sets(lr, decision), lr, y_test, ddi)
    return out
