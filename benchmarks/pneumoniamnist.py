"""PneumoniaMNIST: the ``disease`` trunk + head trained from scratch; the epoch chosen on validation, the test scored once.

Trains ``MultiTaskModule`` (one binary ``disease`` task, pneumonia vs normal) under ``lightning.Trainer`` on a
MedMNIST ``.npz``, keeps the epoch with the best validation AUROC and scores **that epoch** on a test split once.
The headline is ``test_auroc``; the validation AUROC of the chosen epoch is the maximum over epochs on the split
that chose it, so it is optimistic and reported only beside it (``selection_val_auroc``).

- A file with a test split (the full MedMNIST ``pneumoniamnist.npz``): validation = the official val split,
  test = the official test split (comparable with MedMNIST v2's published test numbers).
- A file without one (the shipped cut, ``ldoctor/demo_data/pneumoniamnist``: official train 4,707 and val 524):
  a seeded ``--val-from-train`` share of the training images validates (by image: MedMNIST has no patient ids)
  and the official val split, never seen in training or selection, is the test. Published numbers are on the
  official test split: context, not like for like.

    python benchmarks/pneumoniamnist.py --out pneumoniamnist.json
    python benchmarks/pneumoniamnist.py --npz /data/pneumoniamnist.npz --trunk resnet50 --image-size 128
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from datamodules.medmnist import PNEUMONIAMNIST_DEMO, MedMNISTDataModule
from ldoctor.evaluation.report import write_result
from ldoctor.losses import EqualWeighting
from ldoctor.models.heads import ClassificationHead
from ldoctor.module import MultiTaskModule

#: MedMNIST v2, PneumoniaMNIST **test** split, (AUC, ACC): Yang et al., "MedMNIST v2 - A large-scale lightweight
#: benchmark for 2D and 3D biomedical image classification", Scientific Data 10:41 (2023),
#: doi:10.1038/s41597-022-01721-8, Table 4 (2D benchmark). "(28)"/"(224)" = input resolution.
PUBLISHED = {
    "ResNet-18 (28)": (0.944, 0.854),
    "ResNet-18 (224)": (0.956, 0.864),
    "ResNet-50 (28)": (0.948, 0.854),
    "ResNet-50 (224)": (0.962, 0.884),
    "auto-sklearn": (0.942, 0.855),
    "AutoKeras": (0.947, 0.878),
    "Google AutoML Vision": (0.991, 0.946),
}
TARGET_TEST_AUROC = 0.96


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", default=PNEUMONIAMNIST_DEMO, help="MedMNIST .npz (default: the shipped train/val cut)")
    p.add_argument("--trunk", default="resnet18", help="registered trunk name (resnet18, resnet50, ...)")
    p.add_argument("--weights", default=None, help="local state-dict file for the trunk (default: from scratch)")
    p.add_argument("--image-size", type=int, default=64, help="side the 28 px images are upsampled to, pixels")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (cosine-annealed to 0)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (0 = torch's default). 1 by default: on a 2-core machine shared with other "
        "jobs, OpenMP threads of concurrent processes contend (measured here: 0.59 s vs 2.7 s per step)",
    )
    p.add_argument("--val-from-train", type=float, default=0.1,
                   help="without a test split in the file: this share of the training images validates (chooses the "
                        "epoch) and the official val split is the test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-batches", type=int, default=None, help="batches per epoch and split (smoke runs only)")
    p.add_argument("--out", default=None, help="write the result table as JSON here")
    return p.parse_args(argv)


class EpochReport(Callback):
    """Print one line per epoch (validation AUROC, elapsed seconds) so long runs show progress."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        auroc = trainer.callback_metrics.get("val/disease/auroc")  # validation ran before this hook
        text = "-" if auroc is None else f"{float(auroc):.4f}"
        print(f"epoch {trainer.current_epoch}: val AUROC {text}, {time.perf_counter() - self.start:.0f} s", flush=True)


def _metric(results: list[dict], key: str) -> float | None:
    return float(results[0][key]) if results and key in results[0] else None


def run(args: argparse.Namespace) -> dict:
    """Train, select on validation AUROC, evaluate; returns the result table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, workers=True)
    has_test = "test" in MedMNISTDataModule(npz=args.npz).splits
    dm = MedMNISTDataModule(
        npz=args.npz, class_names=["normal", "pneumonia"], image_size=args.image_size,
        val_from_train=None if has_test else args.val_from_train, seed=args.seed,
        batch_size=args.batch_size, num_workers=args.num_workers,
    )
    model = MultiTaskModule(
        tasks=dm.tasks, heads={"disease": partial(ClassificationHead, dropout=0.1)}, trunk=args.trunk,
        trunk_weights=args.weights,
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=args.weight_decay),
        lr_scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=args.epochs),
        weighting=EqualWeighting,
    )
    with tempfile.TemporaryDirectory(prefix="ldoctor-pneumoniamnist-") as tmp:
        best = ModelCheckpoint(dirpath=tmp, monitor="val/disease/auroc", mode="max", save_top_k=1)
        trainer = L.Trainer(
            max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False, callbacks=[best, EpochReport()],
            enable_progress_bar=False, enable_model_summary=False, deterministic=False,
            limit_train_batches=args.limit_batches, limit_val_batches=args.limit_batches,
            limit_test_batches=args.limit_batches,
        )
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        train_seconds = time.perf_counter() - start
        val = trainer.validate(model, datamodule=dm, ckpt_path=best.best_model_path, verbose=False, weights_only=True)
        test = trainer.test(model, datamodule=dm, ckpt_path=best.best_model_path, verbose=False, weights_only=True)
        # ModelCheckpoint's default file name, "epoch=E-step=S.ckpt": no need to unpickle the checkpoint
        best_epoch = int(re.search(r"epoch=(\d+)", Path(best.best_model_path).name).group(1))
    return {
        "dataset": Path(args.npz).name,
        "protocol": "epoch chosen on validation AUROC; that epoch scored on the test split once",
        "val_split": "official val" if has_test else f"{args.val_from_train:g} of official train (seed {args.seed})",
        "test_split": "official test" if has_test else "official val (the file has no test split)",
        "train_samples": len(dm.train_dataset),
        "val_samples": len(dm.val_dataset),
        "test_samples": len(dm.test_dataset),
        "trunk": args.trunk,
        "weights": args.weights or "none (from scratch)",
        "image_size": args.image_size,
        "epochs": args.epochs,
        "best_epoch": best_epoch,
        "selection_val_auroc": _metric(val, "val/disease/auroc"),
        "selection_val_accuracy": _metric(val, "val/disease/accuracy"),
        "test_auroc": _metric(test, "test/disease/auroc"),
        "test_accuracy": _metric(test, "test/disease/accuracy"),
        "target_test_auroc": TARGET_TEST_AUROC,
        "train_seconds": round(train_seconds, 1),
        "published_test_auc_acc": PUBLISHED,
    }


def format_table(result: dict) -> str:
    """Our numbers beside the published ones, as a Markdown table."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    name = f"ldoctor {result['trunk']} ({result['image_size']} px, scratch, epoch {result['best_epoch']})"
    lines = [
        "| model | split | AUROC | ACC |",
        "|---|---|---|---|",
        f"| **{name}** | **{result['test_split']}, scored once** | **{fmt(result['test_auroc'])}** | "
        f"**{fmt(result['test_accuracy'])}** |",
        f"| same, on the split that chose the epoch (optimistic) | {result['val_split']} | "
        f"{fmt(result['selection_val_auroc'])} | {fmt(result['selection_val_accuracy'])} |",
    ]
    lines += [f"| {name} (MedMNIST v2) | test | {auc:.3f} | {acc:.3f} |" for name, (auc, acc) in PUBLISHED.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = parse_args()
    outcome = run(arguments)
    write_result(outcome, arguments.out, format_table(outcome))
