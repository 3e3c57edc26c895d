"""Default task metrics against scikit-learn on random data with unknown labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from ldoctor.metrics import prepare_for_metrics, task_metrics
from ldoctor.tasks import TaskSpec


def test_binary_metrics_match_sklearn_and_skip_nan():
    g = torch.Generator().manual_seed(0)
    spec = TaskSpec(name="t", kind="binary", num_outputs=1)
    logits = torch.randn(200, 1, generator=g)
    target = (torch.rand(200, 1, generator=g) < torch.sigmoid(2 * logits)).float()
    target[::7] = float("nan")
    metrics = task_metrics(spec)
    metrics.update(*prepare_for_metrics(spec, logits, target))
    got = {k: float(v) for k, v in metrics.compute().items()}
    keep = ~np.isnan(target.numpy().ravel())
    y, p = target.numpy().ravel()[keep], torch.sigmoid(logits).numpy().ravel()[keep]
    assert keep.sum() == 200 - 29
    assert got["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-5)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p > 0.5), abs=1e-6)
    assert got["f1"] == pytest.approx(f1_score(y, p > 0.5), abs=1e-6)
    assert got["sensitivity"] == pytest.approx(recall_score(y, p > 0.5), abs=1e-6)
    assert got["specificity"] == pytest.approx(recall_score(1 - y, p <= 0.5), abs=1e-6)


def test_multilabel_auroc_per_class_with_partial_nan():
    g = torch.Generator().manual_seed(1)
    spec = TaskSpec(name="t", kind="multilabel", num_outputs=3, class_names=["a", "b", "c"])
    logits = torch.randn(300, 3, generator=g)
    target = (torch.rand(300, 3, generator=g) < torch.sigmoid(logits * torch.tensor([3.0, 1.0, 0.2]))).float()
    target[torch.rand(300, 3, generator=g) < 0.2] = float("nan")
    metrics = task_metrics(spec)
    metrics.update(*prepare_for_metrics(spec, logits, target))
    got = {k: float(v) for k, v in metrics.compute().items()}
    per_class = []
    for c, name in enumerate("abc"):
        keep = ~torch.isnan(target[:, c])
        expected = roc_auc_score(target[keep, c].numpy(), logits[keep, c].numpy())
        assert got[f"auroc_{name}"] == pytest.approx(expected, abs=1e-5)
        per_class.append(expected)
    assert got["auroc"] == pytest.approx(np.mean(per_class), abs=1e-5)
    assert got["auroc_a"] > got["auroc_b"] > got["auroc_c"]


def test_multiclass_metrics_match_sklearn():
    g = torch.Generator().manual_seed(2)
    spec = TaskSpec(name="t", kind="multiclass", num_outputs=3)
    logits = torch.randn(150, 3, generator=g)
    target = torch.multinomial(torch.softmax(2 * logits, 1), 1, generator=g).squeeze(1).float()
    target[:10] = float("nan")
    metrics = task_metrics(spec)
    metrics.update(*prepare_for_metrics(spec, logits, target))
    got = {k: float(v) for k, v in metrics.compute().items()}
    y, probs = target[10:].long().numpy(), torch.softmax(logits[10:], 1).numpy()
    assert got["auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-5)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(1)), abs=1e-6)
    assert got["f1"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"), abs=1e-6)


def test_nothing_labelled_gives_none():
    spec = TaskSpec(name="t", kind="multilabel", num_outputs=2)
    assert prepare_for_metrics(spec, torch.zeros(3, 2), torch.full((3, 2), float("nan"))) is None


def test_multilabel_macro_auroc_leaves_out_labels_without_both_classes():
    """A finding absent from a split (no positive) or with only positives is left out of the macro mean, where
    torchmetrics' macro average would score it 0; unknown (NaN) targets stay out of every label."""
    rng = np.random.default_rng(3)
    names = ["a", "b", "absent", "all_positive"]
    task = TaskSpec("disease", "multilabel", 4, names)
    target = rng.integers(0, 2, size=(40, 4)).astype(np.float32)
    target[:, 2], target[:, 3] = 0.0, 1.0
    target[rng.random((40, 4)) < 0.2] = np.nan
    logits = rng.normal(size=(40, 4)).astype(np.float32) + 1.5 * np.nan_to_num(target)
    metrics = task_metrics(task)
    for rows in (slice(0, 17), slice(17, 40)):  # two batches: the states accumulate
        metrics.update(*prepare_for_metrics(task, torch.tensor(logits[rows]), torch.tensor(target[rows])))
    values = metrics.compute()
    expected = []
    for c in (0, 1):
        known = ~np.isnan(target[:, c])
        expected.append(roc_auc_score(target[known, c], logits[known, c]))
    assert float(values["auroc"]) == pytest.approx(np.mean(expected), abs=1e-6)
    assert float(values["auroc_labels"]) == 2
    assert float(values["auroc_a"]) == pytest.approx(expected[0], abs=1e-6)
