"""Loss of the ``drug`` task: masked BCE + optional multilabel margin + optional DDI penalty.

``total = bce_weight * BCE + margin_weight * margin + ddi_weight * DDI``, where

- ``BCE``: binary cross-entropy with logits over the known (non-NaN) label entries, averaged, true drugs
  weighted by ``pos_weight``;
- ``margin``: PyTorch's ``multilabel_margin_loss`` (as in SafeDrug and GAMENet),
  ``sum_{p in true, n not in true} max(0, 1 - (x_p - x_n)) / D``, averaged over the admissions whose labels
  are all known and that have at least one true and one false drug;
- ``DDI``: expected number of interacting predicted pairs, ``sum_{i<j} p_i p_j A_ij`` with ``p = sigmoid(x)``
  and ``A`` the 0/1 interaction matrix, averaged over the admissions with a known label (SafeDrug's
  ``p^T A p`` penalty counts each pair twice; this counts it once).

Use it with ``MultiTaskModule(task_losses={"drug": DrugLoss})`` or in a config::

    task_losses:
      drug:
        class_path: ldoctor.losses.DrugLoss
        init_args: {margin_weight: 0.05, ddi_weight: 0.0}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ldoctor.ddi import load_ddi_matrix
from ldoctor.losses.base import TaskLoss
from ldoctor.tasks import TaskSpec


def multilabel_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-admission multilabel margin loss ``[B]`` for complete 0/1 targets ``[B, D]``.

    Equals ``F.multilabel_margin_loss(logits, indices, reduction="none")`` where ``indices`` lists each row's
    true drugs; computed with ``[B, D, D]`` tensors instead of index lists.
    """
    positive, negative = target > 0.5, target <= 0.5
    hinge = F.relu(1.0 - (logits.unsqueeze(2) - logits.unsqueeze(1)))  # [B, p, n]: 1 - (x_p - x_n)
    pairs = positive.unsqueeze(2) & negative.unsqueeze(1)
    return (hinge * pairs).sum(dim=(1, 2)) / logits.shape[1]


def ddi_penalty(logits: torch.Tensor, ddi_matrix: torch.Tensor) -> torch.Tensor:
    """Expected interacting pairs per admission ``[B]``: ``sum_{i<j} p_i p_j A_ij`` (``A`` symmetric)."""
    probs = torch.sigmoid(logits)
    return 0.5 * ((probs @ ddi_matrix) * probs).sum(dim=1)


class DrugLoss(TaskLoss):
    """Masked BCE with optional multilabel-margin and DDI terms (module docstring).

    Args:
        task: the multilabel drug task; its ``class_names`` index the DDI matrix.
        bce_weight: weight of the BCE term.
        pos_weight: weight of the true drugs in the BCE (> 1 favours recall: with the fixed 0.5 threshold of
            the SafeDrug protocol this predicts larger sets, which Jaccard rewards when sets are large).
        margin_weight: weight of the multilabel margin term (0 = off).
        ddi_weight: weight of the DDI penalty (0 = off; needs ``ddi_pairs``).
        ddi_pairs: interaction pairs: a CSV ``atc3_a,atc3_b`` or an ``.npz`` with ``ddi_A`` and ``drugs``.

    Raises:
        ValueError: a non-multilabel task, negative weights, or ``ddi_weight > 0`` without ``ddi_pairs``.
    """

    def __init__(self, task: TaskSpec, bce_weight: float = 1.0, pos_weight: float = 1.0, margin_weight: float = 0.0,
                 ddi_weight: float = 0.0, ddi_pairs: str | None = None) -> None:
        super().__init__()
        if task.kind != "multilabel":
            raise ValueError(f"DrugLoss needs a multilabel task, {task.name!r} is {task.kind}")
        if min(bce_weight, margin_weight, ddi_weight) < 0 or pos_weight <= 0:
            raise ValueError(
                f"DrugLoss weights must be >= 0 (pos_weight > 0), got bce_weight={bce_weight}, "
                f"pos_weight={pos_weight}, margin_weight={margin_weight}, ddi_weight={ddi_weight}"
            )
        self.pos_weight = pos_weight
        if ddi_weight > 0 and ddi_pairs is None:
            raise ValueError("DrugLoss.ddi_weight > 0 needs ddi_pairs (an ATC-3 pair CSV or a ddi_A .npz)")
        self.bce_weight, self.margin_weight, self.ddi_weight = bce_weight, margin_weight, ddi_weight
        matrix = load_ddi_matrix(ddi_pairs, task.class_names) if ddi_pairs is not None else torch.zeros(0, 0)
        self.register_buffer("ddi_matrix", matrix, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Args: logits ``[B, D]``; target ``[B, D]`` 0/1, NaN = unknown.

        Returns:
            the scalar loss, or ``None`` when no entry of ``target`` is known.
        """
        logits, target = logits.float(), target.view_as(logits).float()
        known = ~torch.isnan(target)
        if not known.any():
            return None
        pos_weight = torch.tensor(self.pos_weight, device=logits.device)
        bce = F.binary_cross_entropy_with_logits(logits[known], target[known], pos_weight=pos_weight)
        total = self.bce_weight * bce
        if self.margin_weight > 0:
            complete = known.all(dim=1)
            rows = complete & (torch.nan_to_num(target) > 0.5).any(dim=1) & (target < 0.5).any(dim=1)
            if rows.any():
                total = total + self.margin_weight * multilabel_margin(logits[rows], target[rows]).mean()
        if self.ddi_weight > 0:
            labelled = known.any(dim=1)
            total = total + self.ddi_weight * ddi_penalty(logits[labelled], self.ddi_matrix).mean()
        return total
