"""benchmarks/chestxray14.py end to end on synthetic NIH folders (as users run it), checked against scikit-learn."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ldoctor.datasets.nih import CHESTXRAY14_FINDINGS, disease_task
from ldoctor.evaluation.delong import delong_paired
from ldoctor.evaluation.scores import per_class_auroc
from ldoctor.module import MultiTaskModule
from tests.fixtures.nih import write_nih_dataset, write_other_patients
from tests.helpers import ROOT, run_benchmark

#: Tiny, fast settings: resnet18 at 32 px, one epoch, few bootstrap draws.
FAST = ["--trunk", "resnet18", "--image-size", "32", "--baseline-size", "32", "--epochs", "1", "--batch-size", "16",
        "--bootstrap-draws", "200", "--accelerator", "cpu", "--threads", "1"]


def test_per_class_auroc_matches_sklearn_and_skips_single_class_findings():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (50, 14)).astype(float)
    labels[:, 13] = 0  # no Hernia in this test split
    labels[:5, 1] = np.nan  # five unknown Cardiomegaly labels are left out
    probs = rng.random((50, 14))
    scores = per_class_auroc(probs, labels, CHESTXRAY14_FINDINGS)
    assert list(scores) == list(CHESTXRAY14_FINDINGS)
    assert scores["Atelectasis"] == pytest.approx(roc_auc_score(labels[:, 0], probs[:, 0]))
    assert scores["Cardiomegaly"] == pytest.approx(roc_auc_score(labels[5:, 1], probs[5:, 1]))
    assert math.isnan(scores["Hernia"])


def _columns(prefix: str) -> list[str]:
    return [f"{prefix}_{name}" for name in CHESTXRAY14_FINDINGS]


def within_fold_auroc(frame: pd.DataFrame, finding: str, scores: str) -> float:
    """Independent reference: the folds' scikit-learn AUROCs weighted by their (positive, negative) pairs."""
    aurocs, pairs = [], []
    for _, fold in frame.groupby("fold"):
        y = fold[f"label_{finding}"].to_numpy()
        if 0 < y.sum() < len(y):
            aurocs.append(roc_auc_score(y, fold[f"{scores}_{finding}"]))
            pairs.append(y.sum() * (len(y) - y.sum()))
    return float(np.average(aurocs, weights=pairs))


def check_scores(result: dict, frame: pd.DataFrame, min_positives: int) -> None:
    """The JSON's scored findings, AUROCs and difference against the per-image predictions."""
    positives = frame[_columns("label")].sum().to_numpy()
    expected = [n for n, count in zip(CHESTXRAY14_FINDINGS, positives) if count >= min_positives]
    assert result["scored_findings"] == expected
    assert list(result["per_finding_auroc"]) == expected == list(result["delong_p"])
    for name in expected:
        assert result["per_finding_auroc"][name] == pytest.approx(within_fold_auroc(frame, name, "ours"))
        assert result["baseline_per_finding_auroc"][name] == pytest.approx(within_fold_auroc(frame, name, "baseline"))
        assert 0.0 <= result["delong_p"][name] <= 1.0
    assert result["test_macro_auroc"] == pytest.approx(np.mean(list(result["per_finding_auroc"].values())))
    assert result["baseline_test_macro_auroc"] == pytest.approx(
        np.mean(list(result["baseline_per_finding_auroc"].values())))
    assert result["difference"] == pytest.approx(result["test_macro_auroc"] - result["baseline_test_macro_auroc"])
    low, high = result["difference_ci"]
    assert low <= result["difference"] <= high
    # the pixel baseline reads the synthetic findings (bright discs) from the raw pixels: far above chance
    assert result["baseline_test_macro_auroc"] > 0.85
    assert result["published"]["per_finding"]["Cardiomegaly"]["chexnet"] == 0.9248
    assert "full ChestX-ray14" in result["published"]["caveat"]


@pytest.mark.benchmark
def test_cross_validation_on_a_synthetic_folder(tmp_path):
    nih = write_nih_dataset(tmp_path / "nih", num_patients=30, image_size=32, prevalence=0.3, seed=2)
    counts = nih.labels.sum(axis=0)
    threshold = int(np.median(counts)) + 1  # some findings below the rule, some above
    assert (counts >= threshold).any() and (counts < threshold).any()
    out, predictions = tmp_path / "r.json", tmp_path / "p.csv"
    run_benchmark("chestxray14.py", ["--root", str(nih.root), "--folds", "3", "--min-positives", str(threshold),
                                     "--predictions", str(predictions), "--out", str(out), *FAST], cwd=tmp_path)
    result = json.loads(out.read_text())
    frame = pd.read_csv(predictions)
    # every image tested once (list files ignored), each patient in one fold
    assert sorted(frame["id"]) == sorted(nih.table["Image Index"])
    assert (frame.groupby("patient_id")["fold"].nunique() == 1).all()
    truth = nih.table.assign(**dict(zip(_columns("label"), nih.labels.T))).set_index("Image Index")
    np.testing.assert_array_equal(frame[_columns("label")].to_numpy(), truth.loc[frame["id"], _columns("label")])
    assert result["protocol"].startswith("3-fold") and result["folds"] == 3 and result["transfer"].startswith("none")
    check_scores(result, frame, threshold)
    rows = result["per_fold"]
    assert [r["fold"] for r in rows] == [0, 1, 2] and sum(r["images"]["test"] for r in rows) == len(nih.table)
    per_fold = [r["macro_auroc"] for r in rows]  # None for a fold where no finding reaches the threshold
    expected_mean = None if None in per_fold else pytest.approx(np.mean(per_fold))
    assert result["fold_mean_macro_auroc"]["mean"] == expected_mean
    for row in rows:
        counts = frame[frame["fold"] == row["fold"]][_columns("label")].sum()
        assert row["scored_findings"] == [n for n in CHESTXRAY14_FINDINGS if counts[f"label_{n}"] >= threshold]


@pytest.mark.benchmark
def test_test_root_with_pneumoniamnist_pretraining(tmp_path):
    root = write_other_patients(tmp_path / "train", first_patient=1, num_patients=24, seed=3)
    test = write_other_patients(tmp_path / "test", first_patient=501, num_patients=14, seed=4)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 24)):  # a tiny MedMNIST-format file: 28 px, brighter = pneumonia
        labels = rng.integers(0, 2, (n, 1))
        arrays[f"{split}_images"] = (rng.random((n, 28, 28)) * 60 + labels[:, :, None] * 120).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    np.savez(tmp_path / "pneumonia.npz", **arrays)
    out, predictions = tmp_path / "r.json", tmp_path / "p.csv"
    run_benchmark("chestxray14.py", [
        "--root", str(root.root), "--test-root", str(test.root), "--pretrain", "pneumoniamnist",
        "--pretrain-npz", str(tmp_path / "pneumonia.npz"), "--pretrain-epochs", "1", "--predictions",
        str(predictions), "--out", str(out), *FAST], cwd=tmp_path)
    result = json.loads(out.read_text())
    frame = pd.read_csv(predictions)
    assert result["protocol"] == "test root" and result["test_root"] == str(test.root)
    assert frame["id"].tolist() == test.table["Image Index"].tolist()  # all of the test root, once
    assert result["images"]["test"] == len(test.table)
    assert result["images"]["train"] + result["images"]["val"] == len(root.table)
    assert result["transfer"] == "pretrain pneumoniamnist" and result["transfer_detail"]["train_images"] == 48
    assert result["model"]["trunk_lr_factor"] == 0.1
    check_scores(result, frame, 5)
    for name in result["scored_findings"]:  # one test set: DeLong's own p-value
        y = frame[f"label_{name}"].to_numpy().astype(int)
        expected = delong_paired(y, frame[f"ours_{name}"].to_numpy(), frame[f"baseline_{name}"].to_numpy())
        assert result["delong_p"][name] == pytest.approx(expected.p_value)


def test_init_trunk_of_another_architecture_is_refused_before_training(tmp_path):
    nih = write_nih_dataset(tmp_path / "nih", num_patients=8, image_size=32, seed=5)
    model = MultiTaskModule([disease_task()], trunk="resnet18")
    checkpoint = tmp_path / "model.ckpt"  # what Lightning writes, less the training state
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"trunk": "resnet18"}}, checkpoint)
    refused = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chestxray14.py"), "--root", str(nih.root), "--init-trunk",
         str(checkpoint), "--trunk", "resnet34", "--folds", "0", "--out", str(tmp_path / "r.json")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert f"{checkpoint}: its trunk is 'resnet18', --trunk says 'resnet34'; leave --trunk out" in refused.stderr
    assert not (tmp_path / "r.json").exists()
