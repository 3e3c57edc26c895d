"""benchmarks/chestxray14.py end to end on synthetic data in the NIH format, and its per-finding AUROC."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldoctor.datasets.nih import CHESTXRAY14_FINDINGS
from ldoctor.evaluation.scores import per_class_auroc
from tests.fixtures.nih import write_nih_dataset
from tests.helpers import run_benchmark


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


def test_benchmark_runs_on_synthetic_nih_data(tmp_path):
    nih = write_nih_dataset(tmp_path / "nih", num_patients=16, image_size=32, seed=2)
    out = tmp_path / "r.json"
    run_benchmark("chestxray14.py", [
        "--root", str(nih.root), "--trunk", "resnet18", "--image-size", "32", "--epochs", "1",
        "--batch-size", "16", "--num-workers", "0", "--limit-batches", "2", "--accelerator", "cpu",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ], cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["split"] == "official test_list.txt"
    assert result["test_images"] == len(nih.test)
    assert list(result["per_class_auroc"]) == list(CHESTXRAY14_FINDINGS)
    assert result["per_class_auroc"]["Cardiomegaly"]["chexnet"] == 0.9248
    defined = [r["ours"] for r in result["per_class_auroc"].values() if r["ours"] is not None and not math.isnan(r["ours"])]
    assert defined and all(0.0 <= v <= 1.0 for v in defined)
    assert result["macro_auroc"] == pytest.approx(np.mean(defined))
