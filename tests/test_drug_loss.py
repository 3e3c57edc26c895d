"""DrugLoss: masked BCE, multilabel margin and DDI penalty against hand-computed and PyTorch references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ldoctor.datasets.lidc import tumor_task
from ldoctor.datasets.mimic import drug_task
from ldoctor.ddi import write_ddi_pairs
from ldoctor.losses.drug import DrugLoss, ddi_penalty, multilabel_margin

DRUGS = ["A02B", "B01A", "C07A", "N02B"]
TASK = drug_task(DRUGS, ["<unk>", "D:1"])


def test_bce_masks_unknown_entries_and_matches_hand_value():
    logits = torch.tensor([[0.0, 2.0, -1.0, 0.5], [1.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, float("nan"), 1.0], [float("nan")] * 4])
    known = [(0.0, 1.0), (2.0, 0.0), (0.5, 1.0)]
    expected = sum(math.log1p(math.exp(-x)) if y else math.log1p(math.exp(x)) for x, y in known) / 3
    assert float(DrugLoss(TASK)(logits, target)) == pytest.approx(expected, abs=1e-6)


def test_pos_weight_scales_true_drugs():
    logits = torch.tensor([[0.3, -0.2, 0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.full((4,), 2.5))
    assert float(DrugLoss(TASK, pos_weight=2.5)(logits, target)) == pytest.approx(float(expected), abs=1e-6)


def test_no_labelled_sample_returns_none():
    assert DrugLoss(TASK, margin_weight=1.0)(torch.zeros(2, 4), torch.full((2, 4), float("nan"))) is None


def test_margin_term_equals_torch_multilabel_margin_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    target = (torch.rand(6, 4, generator=g) < 0.5).float()
    target[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    target[1] = torch.tensor([1.0, 1.0, 0.0, 1.0])
    indices = torch.full((6, 4), -1, dtype=torch.long)
    for row in range(6):
        positive = target[row].nonzero().flatten()
        indices[row, : len(positive)] = positive
    reference = F.multilabel_margin_loss(logits, indices, reduction="none")
    assert torch.allclose(multilabel_margin(logits, target), reference, atol=1e-6)
    # in DrugLoss: rows with an unknown entry and rows without a false drug are left out of the margin term
    target[2, 0] = float("nan")
    target[3] = 1.0
    rows = [0, 1, 4, 5]
    rows = [r for r in rows if 0 < target[r].sum() < 4]
    bce = F.binary_cross_entropy_with_logits(logits[~target.isnan()], target[~target.isnan()])
    expected = bce + 0.5 * reference[rows].mean()
    assert float(DrugLoss(TASK, margin_weight=0.5)(logits, target)) == pytest.approx(float(expected), abs=1e-5)


def test_ddi_penalty_counts_each_interacting_pair_once(tmp_path):
    write_ddi_pairs(tmp_path / "ddi.csv", [("A02B", "B01A"), ("C07A", "N02B")])
    logits = torch.logit(torch.tensor([[0.5, 0.8, 0.1, 0.25]]))
    # expected interacting pairs: 0.5 * 0.8 + 0.1 * 0.25
    loss = DrugLoss(TASK, bce_weight=0.0, ddi_weight=2.0, ddi_pairs=str(tmp_path / "ddi.csv"))
    assert float(loss(logits, torch.zeros(1, 4))) == pytest.approx(2.0 * (0.4 + 0.025), abs=1e-6)
    assert float(ddi_penalty(logits, loss.ddi_matrix)[0]) == pytest.approx(0.425, abs=1e-6)
    logits.requires_grad_(True)
    loss(logits, torch.zeros(1, 4)).backward()
    assert (logits.grad > 0).all()  # raising any interacting drug's probability raises the penalty


def test_bad_configuration_fails():
    with pytest.raises(ValueError, match="needs ddi_pairs"):
        DrugLoss(TASK, ddi_weight=0.1)
    with pytest.raises(ValueError, match="needs a multilabel task"):
        DrugLoss(tumor_task())
    with pytest.raises(ValueError, match="must be >= 0"):
        DrugLoss(TASK, margin_weight=-1.0)
