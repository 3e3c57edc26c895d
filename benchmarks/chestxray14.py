"""ChestX-ray14: per-finding and macro AUROC on the test split, beside CheXNet and Wang et al. 2017.

For users with the full NIH data set (``images*/``, ``Data_Entry_2017*.csv``, ``train_val_list.txt``,
``test_list.txt``): trains the ``disease`` trunk + head (or loads ``--ckpt``), selects the epoch on validation
macro AUROC (validation = a patient-wise share of train_val), then scores the official test split.

    python benchmarks/chestxray14.py --root /data/nih-cxr14 --out chestxray14.json
    python benchmarks/chestxray14.py --root /data/nih-cxr14 --ckpt outputs/chestxray14/best.ckpt

Published numbers are context, not a like-for-like comparison: Wang et al. (CVPR 2017) and CheXNet
(Rajpurkar et al. 2017) used their own splits and the 2017 labels, not necessarily the official test list nor
the 2020 revision of the label table. AUROC here is scikit-learn's ``roc_auc_score`` per finding.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.chestxray14 import ChestXray14DataModule
from ldoctor.datasets.nih import CHESTXRAY14_FINDINGS
from ldoctor.evaluation.report import write_result
from ldoctor.evaluation.scores import per_class_auroc
from ldoctor.losses import EqualWeighting, MaskedBCEWithLogits
from ldoctor.module import MultiTaskModule

#: Test AUROC per finding, as listed in Rajpurkar et al., "CheXNet: Radiologist-Level Pneumonia Detection on
#: Chest X-Rays with Deep Learning", arXiv:1711.05225 (v3, 2017), Table 2, columns "Wang et al. (2017)"
#: (ResNet-50, Wang et al., "ChestX-ray8", CVPR 2017) and "CheXNet (ours)" (DenseNet-121).
PUBLISHED = {
    "Atelectasis": (0.716, 0.8094),
    "Cardiomegaly": (0.807, 0.9248),
    "Effusion": (0.784, 0.8638),
    "Infiltration": (0.609, 0.7345),
    "Mass": (0.706, 0.8676),
    "Nodule": (0.671, 0.7802),
    "Pneumonia": (0.633, 0.7680),
    "Pneumothorax": (0.806, 0.8887),
    "Consolidation": (0.708, 0.7901),
    "Edema": (0.835, 0.8878),
    "Emphysema": (0.815, 0.9371),
    "Fibrosis": (0.769, 0.8047),
    "Pleural_Thickening": (0.708, 0.8062),
    "Hernia": (0.767, 0.9164),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="NIH ChestX-ray14 folder")
    p.add_argument("--ckpt", default=None, help="evaluate this checkpoint instead of training")
    p.add_argument("--trunk", default="resnet50")
    p.add_argument("--weights", default=None, help="trunk weights: torchvision enum name or local state-dict file")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--pos-weight", action="store_true", help="weight positives by #neg/#pos of the training split")
    p.add_argument("--view-positions", nargs="*", default=None, help="e.g. PA")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--cache-dir", default=None, help="uint8 image cache (default: a temporary folder)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--limit-batches", type=int, default=None, help="batches per epoch and split (smoke runs only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the result table as JSON here")
    return p.parse_args(argv)


def _predict(trainer: L.Trainer, model: MultiTaskModule, dm: ChestXray14DataModule, ckpt: str | None):
    outputs = trainer.predict(model, dataloaders=dm.test_dataloader(), ckpt_path=ckpt)
    probs = torch.cat([o["probabilities"] for o in outputs]).float().numpy()
    labels = torch.cat([o["label"] for o in outputs]).float().numpy()
    return probs, labels


def run(args: argparse.Namespace) -> dict:
    """Train (or load), select on validation, score the test split."""
    L.seed_everything(args.seed, workers=True)
    with tempfile.TemporaryDirectory(prefix="ldoctor-cxr14-") as tmp:
        dm = ChestXray14DataModule(
            root=args.root, image_size=args.image_size, view_positions=args.view_positions,
            cache="disk", cache_dir=args.cache_dir or str(Path(tmp) / "cache"), batch_size=args.batch_size,
            num_workers=args.num_workers, seed=args.seed,
        )
        dm.setup("fit")
        trainer_kwargs = dict(
            accelerator=args.accelerator, devices=1, logger=False, enable_progress_bar=False,
            enable_model_summary=False, limit_train_batches=args.limit_batches,
            limit_val_batches=args.limit_batches, limit_predict_batches=args.limit_batches,
        )
        start = time.perf_counter()
        if args.ckpt:
            model, ckpt = MultiTaskModule.load_from_checkpoint(args.ckpt, map_location="cpu"), None
            trainer = L.Trainer(**trainer_kwargs)
        else:
            losses = {"disease": partial(MaskedBCEWithLogits, pos_weight="auto")} if args.pos_weight else None
            model = MultiTaskModule(
                tasks=dm.tasks, trunk=args.trunk, trunk_weights=args.weights, weighting=EqualWeighting,
                optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=1e-5), task_losses=losses,
            )
            best = ModelCheckpoint(dirpath=Path(tmp) / "checkpoints", monitor="val/disease/auroc", mode="max")
            trainer = L.Trainer(max_epochs=args.epochs, callbacks=[best], **trainer_kwargs)
            trainer.fit(model, datamodule=dm)
            ckpt = best.best_model_path
        probs, labels = _predict(trainer, model, dm, ckpt)
        seconds = time.perf_counter() - start
    ours = per_class_auroc(probs, labels, CHESTXRAY14_FINDINGS)
    defined = [v for v in ours.values() if not math.isnan(v)]
    return {
        "root": str(args.root),
        "split": "official test_list.txt" if dm.official_split else "seeded patient-wise (NOT the official split)",
        "train_images": len(dm.train_dataset), "val_images": len(dm.val_dataset), "test_images": len(labels),
        "trunk": args.trunk if not args.ckpt else f"checkpoint {args.ckpt}",
        "image_size": args.image_size, "epochs": 0 if args.ckpt else args.epochs,
        "per_class_auroc": {
            name: {"ours": ours[name], "wang2017": PUBLISHED[name][0], "chexnet": PUBLISHED[name][1]}
            for name in CHESTXRAY14_FINDINGS
        },
        "macro_auroc": float(np.mean(defined)) if defined else math.nan,
        "macro_auroc_wang2017": float(np.mean([v[0] for v in PUBLISHED.values()])),
        "macro_auroc_chexnet": float(np.mean([v[1] for v in PUBLISHED.values()])),
        "seconds": round(seconds, 1),
    }


def format_table(result: dict) -> str:
    lines = ["| finding | ours | Wang et al. 2017 | CheXNet |", "|---|---|---|---|"]
    for name, row in result["per_class_auroc"].items():
        lines.append(f"| {name} | {row['ours']:.3f} | {row['wang2017']:.3f} | {row['chexnet']:.3f} |")
    lines.append(
        f"| **macro** | {result['macro_auroc']:.3f} | {result['macro_auroc_wang2017']:.3f} | "
        f"{result['macro_auroc_chexnet']:.3f} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = parse_args()
    outcome = run(arguments)
    write_result(outcome, arguments.out, format_table(outcome))
