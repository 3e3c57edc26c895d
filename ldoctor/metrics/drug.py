"""Drug-recommendation metrics (``drug`` task), SafeDrug protocol (Yang et al., IJCAI 2021, ``util.py``).

An admission's predicted set is the drugs with probability >= ``threshold`` (0.5); Jaccard, precision,
recall and F1 are computed per admission and averaged over admissions; PRAUC is each admission's average
precision over the drug scores, averaged; DDI rate = interacting pairs / all pairs among the predicted
sets, pooled over admissions; ``avg_drugs`` = mean predicted set size. An admission with any unknown
label (``-1`` after ``prepare_for_metrics``) is left out: its drug set is not known.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection

from ldoctor.ddi import load_ddi_matrix
from ldoctor.tasks import TaskSpec

#: ``threshold`` value that picks each admission's set by expected Jaccard instead of a fixed cut-off.
EXPECTED_JACCARD = "expected_jaccard"


def expected_jaccard_sets(probs: torch.Tensor) -> torch.Tensor:
    """Per admission, the set of most probable drugs that maximises the expected Jaccard (plug-in decision).

    With the drugs sorted by probability ``p_(1) >= p_(2) >= ...``, predicting the top ``k`` gives an expected
    intersection ``sum_{i<=k} p_(i)`` and an expected union ``k + sum_{i>k} p_(i)``; the chosen ``k >= 1``
    maximises their ratio. Adding a drug pays when its probability exceeds ``J / (1 + J)`` of the current ratio
    ``J`` (about 0.3 at J = 0.43), so the set is larger than the 0.5 cut-off's when Jaccard is low: the same
    argument as the optimal F1 threshold ``F / 2`` of Lipton, Elkan and Naryanaswamy ("Optimal thresholding of
    classifiers to maximize F1 measure", ECML PKDD 2014), applied to Jaccard.

    Args:
        probs: ``[N, D]`` probabilities.

    Returns:
        0/1 float ``[N, D]``.
    """
    sorted_probs, order = torch.sort(probs.float(), dim=1, descending=True)
    kept = sorted_probs.cumsum(dim=1)
    k = torch.arange(1, probs.shape[1] + 1, device=probs.device, dtype=kept.dtype)
    ratio = kept / (k + kept[:, -1:] - kept)
    size = ratio.argmax(dim=1, keepdim=True) + 1  # first maximum
    chosen = (k.unsqueeze(0) <= size).float()
    return torch.zeros_like(chosen).scatter(1, order, chosen)


def predicted_sets(probs: torch.Tensor, threshold: float | str = 0.5) -> torch.Tensor:
    """0/1 ``[N, D]`` predicted drug sets: ``probs >= threshold``, or :func:`expected_jaccard_sets` when
    ``threshold`` is ``"expected_jaccard"``."""
    if threshold == EXPECTED_JACCARD:
        return expected_jaccard_sets(probs)
    if isinstance(threshold, str):
        raise ValueError(f"threshold must be a probability or {EXPECTED_JACCARD!r}, got {threshold!r}")
    return (probs >= threshold).float()


def _known_rows(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose every label is known; ``target`` as float 0/1."""
    keep = (target >= 0).all(dim=1)
    return preds[keep].float(), target[keep].float()


class _AdmissionMean(Metric):
    """Mean over admissions of a per-admission score (``sum`` / ``count`` states, summed across processes).

    Args:
        threshold: probability at or above which a drug is predicted, or ``"expected_jaccard"``
            (:func:`expected_jaccard_sets`).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, threshold: float | str = 0.5) -> None:
        super().__init__()
        predicted_sets(torch.zeros(1, 1), threshold)  # validates threshold
        self.threshold = threshold
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def scores(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-admission scores ``[N]`` (NaN = admission not scored)."""
        raise NotImplementedError

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Args: preds ``[N, D]`` probabilities; target ``[N, D]`` 0/1, ``-1`` = unknown."""
        probs, target = _known_rows(preds, target)
        values = self.scores(probs, target)
        values = values[~torch.isnan(values)]
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


class DrugJaccard(_AdmissionMean):
    """Per-admission Jaccard ``|pred & true| / |pred | true|`` (0 when both are empty), averaged."""

    def scores(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predicted = predicted_sets(probs, self.threshold)
        inter = (predicted * target).sum(dim=1)
        union = ((predicted + target) > 0).float().sum(dim=1)
        return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


class DrugF1(_AdmissionMean):
    """Per-admission F1 of the predicted set (precision or recall of an empty set = 0), averaged."""

    def scores(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predicted = predicted_sets(probs, self.threshold)
        inter = (predicted * target).sum(dim=1)
        precision = inter / predicted.sum(dim=1).clamp(min=1)
        recall = inter / target.sum(dim=1).clamp(min=1)
        denom = precision + recall
        f1 = 2 * precision * recall / denom.clamp(min=1e-12)
        return torch.where(denom > 0, f1, torch.zeros_like(denom))


class DrugPRAUC(_AdmissionMean):
    """Per-admission average precision of the drug scores (scikit-learn's definition, ties grouped),
    averaged over admissions with at least one true drug."""

    def scores(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # precision at the threshold of each drug i: true among {scores >= s_i} / |{scores >= s_i}|
        at_or_above = (probs.unsqueeze(1) >= probs.unsqueeze(2)).float()  # [N, i, j]: s_j >= s_i
        precision = (at_or_above * target.unsqueeze(1)).sum(dim=2) / at_or_above.sum(dim=2)
        positives = target.sum(dim=1)
        ap = (precision * target).sum(dim=1) / positives.clamp(min=1)
        return torch.where(positives > 0, ap, torch.full_like(ap, float("nan")))


class DrugCount(_AdmissionMean):
    """Mean number of predicted drugs per admission."""

    higher_is_better = None

    def scores(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return predicted_sets(probs, self.threshold).sum(dim=1)


class DrugDDIRate(Metric):
    """Share of predicted drug pairs that interact, pooled over admissions (SafeDrug's ``ddi_rate_score``).

    Args:
        ddi_matrix: ``[D, D]`` 0/1 symmetric interaction adjacency over the task's drugs.
        threshold: probability at or above which a drug is predicted, or ``"expected_jaccard"``.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, ddi_matrix: torch.Tensor, threshold: float | str = 0.5) -> None:
        super().__init__()
        self.threshold = threshold
        self.register_buffer("ddi_matrix", torch.as_tensor(ddi_matrix, dtype=torch.float32), persistent=False)
        self.add_state("interacting", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Args: preds ``[N, D]`` probabilities; target ``[N, D]`` (only used to drop unknown rows)."""
        probs, _ = _known_rows(preds, target)
        predicted = predicted_sets(probs, self.threshold)
        k = predicted.sum(dim=1)
        self.interacting += 0.5 * ((predicted @ self.ddi_matrix.to(predicted)) * predicted).sum().double()
        self.pairs += (k * (k - 1) / 2).sum().double()

    def compute(self) -> torch.Tensor:
        return (self.interacting / self.pairs).float() if self.pairs > 0 else torch.tensor(0.0)


class DrugMetrics(MetricCollection):
    """Drug-recommendation metrics of a task: ``jaccard``, ``prauc``, ``f1``, ``avg_drugs`` and, with
    ``ddi_pairs``, ``ddi_rate``. Usable as ``MultiTaskModule(metrics={"drug": DrugMetrics})`` or with
    ``class_path: ldoctor.metrics.DrugMetrics`` and ``init_args`` in a config.

    Args:
        task: the multilabel drug task (its ``class_names`` are the ATC-3 classes).
        ddi_pairs: interaction pairs, a CSV ``atc3_a,atc3_b`` or an ``.npz`` with ``ddi_A`` and ``drugs``.
        threshold: probability at or above which a drug is predicted (SafeDrug: 0.5), or ``"expected_jaccard"``
            for each admission's expected-Jaccard set (:func:`expected_jaccard_sets`).
    """

    def __init__(self, task: TaskSpec, ddi_pairs: str | None = None, threshold: float | str = 0.5) -> None:
        if task.kind != "multilabel":
            raise ValueError(f"DrugMetrics needs a multilabel task, {task.name!r} is {task.kind}")
        metrics: dict[str, Metric] = {
            "jaccard": DrugJaccard(threshold),
            "prauc": DrugPRAUC(threshold),
            "f1": DrugF1(threshold),
            "avg_drugs": DrugCount(threshold),
        }
        if ddi_pairs is not None:
            metrics["ddi_rate"] = DrugDDIRate(load_ddi_matrix(ddi_pairs, task.class_names), threshold)
        super().__init__(metrics, compute_groups=False)
