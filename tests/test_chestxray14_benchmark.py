"""benchmarks/chestxray14.py end to end on synthetic data in the NIH format."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldoctor.data.nih_writer import write_nih_dataset
from ldoctor.tasks import CHESTXRAY14_FINDINGS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import chestxray14 as bench  # noqa: E402


def test_per_class_auroc_matches_sklearn_and_skips_single_class_findings():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (50, 14)).astype(float)
    labels[:, 13] = 0  # no Hernia in this test split
    probs = rng.random((50, 14))
    scores = bench.per_class_auroc(probs, labels)
    assert list(scores) == list(CHESTXRAY14_FINDINGS)
    assert scores["Atelectasis"] == pytest.approx(roc_auc_score(labels[:, 0], probs[:, 0]))
    assert math.isnan(scores["Hernia"])


def test_benchmark_runs_on_synthetic_nih_data(tmp_path, one_thread):
    nih = write_nih_dataset(tmp_path / "nih", num_patients=16, image_size=32, seed=2)
    out = tmp_path / "r.json"
    result = bench.main([
        "--root", str(nih.root), "--trunk", "resnet18", "--image-size", "32", "--epochs", "1",
        "--batch-size", "16", "--num-workers", "0", "--limit-batches", "2", "--accelerator", "cpu",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ])
    assert json.loads(out.read_text())["macro_auroc"] == pytest.approx(result["macro_auroc"], nan_ok=True)
    assert result["split"] == "official test_list.txt"
    assert result["test_images"] == len(nih.test)
    assert list(result["per_class_auroc"]) == list(CHESTXRAY14_FINDINGS)
    assert result["per_class_auroc"]["Cardiomegaly"]["chexnet"] == 0.9248
    defined = [r["ours"] for r in result["per_class_auroc"].values() if not math.isnan(r["ours"])]
    assert defined and all(0.0 <= v <= 1.0 for v in defined)
    assert result["macro_auroc"] == pytest.approx(np.mean(defined))
