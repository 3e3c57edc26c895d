"""Medication-recommendation evaluation (``drug`` task): per-admission scores, summaries and the baselines.

Metrics follow SafeDrug (Yang et al., IJCAI 2021): Jaccard, F1 and PRAUC per admission (:mod:`ldoctor.metrics.drug`),
DDI rate pooled over admissions (only with a user-supplied interaction table: without one the rate is unknown,
``None``, never 0), mean number of drugs. Summaries average over admissions, or per patient and then over patients
as SafeDrug's ``test`` routine does.
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
    # no interaction table: the interacting pairs are unknown (NaN), so no DDI rate is ever reported without one
    out["interacting"] = (0.5 * ((predicted @ ddi) * predicted).sum(dim=1)) if ddi is not None else k * float("nan")
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
    pairs, interacting = values["pairs"][rows].sum(), values["interacting"][rows]
    if np.isnan(interacting).any():
        result["ddi_rate"] = None  # no interaction table
    else:
        result["ddi_rate"] = float(interacting.sum() / pairs) if pairs > 0 else 0.0
    return result


def patient_means(values: np.ndarray, patients: list[str]) -> tuple[list[str], np.ndarray]:
    """Per-patient mean of per-admission ``values`` ``[N]``: the patients in first-seen order and their means."""
    groups: dict[str, list[float]] = {}
    for patient, value in zip(patients, values):
        groups.setdefault(patient, []).append(float(value))
    return list(groups), np.array([np.mean(v) for v in groups.values()])


def mean_std(runs: list[dict[str, float]]) -> dict[str, float]:
    """``{metric}_mean`` and ``{metric}_std`` (sample std; 0 for one run) of :func:`summarise` results
    (``None`` when a run has no value, e.g. the DDI rate without an interaction table)."""
    out = {}
    for key in METRICS:
        values = [r[key] for r in runs]
        if any(v is None for v in values):
            out[f"{key}_mean"] = out[f"{key}_std"] = None
            continue
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


def previous_drugs(samples: list[dict], drugs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's previous kept admission's drugs ``[N, D]`` 0/1 and whether it has one ``[N]`` bool.

    ``samples`` hold each patient's admissions in time order (as ``patient_samples`` writes them); a patient's
    first admission has no previous one (all zeros, ``False``).
    """
    index = {d: i for i, d in enumerate(drugs)}
    out = np.zeros((len(samples), len(drugs)), dtype=np.float32)
    has = np.zeros(len(samples), dtype=bool)
    previous: dict[str, list[str]] = {}
    for row, sample in enumerate(samples):
        subject = sample["id"].split("/")[0]
        if subject in previous:
            has[row] = True
            out[row, [index[d] for d in previous[subject] if d in index]] = 1
        previous[subject] = sample["drugs"]
    return out, has


def previous_admission_baseline(
    test: list[dict], drugs: list[str], fallback: np.ndarray, freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The drugs of the patient's previous kept admission; ``fallback`` (e.g. the top-k set) for first admissions.

    Returns the 0/1 sets and ranking scores (the set plus half the training frequency, to order ties for PRAUC).
    """
    copied, has = previous_drugs(test, drugs)
    pred = np.where(has[:, None], copied, fallback).astype(np.float32)
    return pred, pred + freq[None] * 0.5


def with_previous_drugs(samples: list[dict], codes: list[str], drugs: list[str]) -> np.ndarray:
    """``[N, V + D + 1]``: the multi-hot codes (:func:`multi_hot`), the previous admission's drugs as their own
    block, and a flag for re-admissions, so a regression can weight "given last time" apart from the codes."""
    copied, has = previous_drugs(samples, drugs)
    return np.concatenate([multi_hot(samples, codes), copied, has[:, None].astype(np.float32)], axis=1)


#: The baselines :func:`baselines` fits and scores, in table order.
BASELINES = ("most_frequent_k", "previous_admission", "logistic_regression", "regression_previous_drugs",
             "hybrid")


def baselines(
    train: list[dict], test: list[dict], drugs: list[str], codes: list[str], ddi: torch.Tensor | None,
    decision: float | str = 0.5,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-admission scores (:func:`admission_scores`) of the baselines fitted on the ``train`` samples and scored
    on the ``test`` samples (``patient_samples`` dicts: ``id``, ``history``, ``drugs``; each patient's admissions
    in time order):

    - ``most_frequent_k``: the ``k`` most frequent training drugs (``k`` of best training Jaccard);
    - ``previous_admission``: the previous admission's drugs; the top-``k`` set for first admissions;
    - ``logistic_regression``: one-vs-rest L2 logistic regression on the multi-hot codes of the admissions so far
      (with ``history_drugs`` vocabularies these include the earlier admissions' drugs as ``M:`` codes);
    - ``regression_previous_drugs``: the same regression with the previous admission's drugs as a block of their
      own plus a re-admission flag (:func:`with_previous_drugs`);
    - ``hybrid``: the previous admission's drugs for re-admissions, the logistic regression for first admissions
      (the obvious combination of the two strongest simple rules).

    Probabilistic rows decide at 0.5. With another ``decision`` (e.g. ``"expected_jaccard"``) each regression row
    is also scored with that decision (``<name>_same_decision``), so a model never wins by its decision rule alone.
    """
    y_train, y_test = drug_labels(train, drugs), torch.from_numpy(drug_labels(test, drugs))
    freq = y_train.mean(axis=0)
    top_pred, top_scores, _ = top_k_baseline(y_train, len(test))
    prev_pred, prev_scores = previous_admission_baseline(test, drugs, top_pred, freq)
    lr_probs = one_vs_rest_logistic(multi_hot(train, codes), y_train, multi_hot(test, codes))
    prev_lr_probs = one_vs_rest_logistic(with_previous_drugs(train, codes, drugs), y_train,
                                         with_previous_drugs(test, codes, drugs))
    copied, readmission = previous_drugs(test, drugs)

    def hybrid(sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copy for re-admissions, the regression's ``sets`` (and probabilities) for first admissions."""
        pred = np.where(readmission[:, None], copied, sets).astype(np.float32)
        return pred, np.where(readmission[:, None], copied + freq[None] * 0.5, lr_probs).astype(np.float32)

    def at(probs: np.ndarray, rule: float | str) -> np.ndarray:
        return predicted_sets(torch.from_numpy(probs).float(), rule).numpy()

    rows = {
        "most_frequent_k": (top_pred, top_scores),
        "previous_admission": (prev_pred, prev_scores),
        "logistic_regression": (at(lr_probs, 0.5), lr_probs),
        "regression_previous_drugs": (at(prev_lr_probs, 0.5), prev_lr_probs),
        "hybrid": hybrid(at(lr_probs, 0.5)),
    }
    if decision != 0.5:
        rows["logistic_regression_same_decision"] = (at(lr_probs, decision), lr_probs)
        rows["regression_previous_drugs_same_decision"] = (at(prev_lr_probs, decision), prev_lr_probs)
        rows["hybrid_same_decision"] = hybrid(at(lr_probs, decision))
    return {name: admission_scores(torch.from_numpy(pred).float(), torch.from_numpy(scores).float(), y_test, ddi)
            for name, (pred, scores) in rows.items()}
