"""The tumor benchmarks' protocol pieces: train the image model per fold (or on a fixed split), read it with
test-time flips, fit regressions on nodule features, and stack the image model with one of them on validation.

Shared by ``benchmarks/lidc.py`` (virtual cases) and ``benchmarks/lidc_real.py`` (real CT). Nothing here chooses on
the test split: checkpoints are picked on validation AUROC, stacks are weighted on validation nodules, regressions
are fitted on training nodules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from ldoctor.datasets.lidc.records import labelled
from ldoctor.evaluation.baselines import logistic_regression_scores
from ldoctor.evaluation.prediction import TTA_FLIPS, predict
from ldoctor.evaluation.stacking import FeatureStack
from ldoctor.evaluation.training import fit_best
from ldoctor.models.heads import ClassificationHead
from ldoctor.module import MultiTaskModule

#: ``features(split) -> (x [N, K], y [N])`` over a split's labelled nodules, in split order.
SplitFeatures = Callable[[str], tuple[np.ndarray, np.ndarray]]


@dataclass
class ImageModel:
    """How the tumor image model is built, trained and read.

    Args:
        trunk: registered trunk name.
        epochs: training epochs (cosine schedule over them).
        lr: AdamW learning rate (weight decay 1e-4).
        dropout: the classification head's dropout.
        threads: torch threads per training process.
        tta: average the predictions over in-plane flips of the views (:data:`TTA_FLIPS`).
        real_steps: with training-only nodules (``LIDCDataModule.training_source``, e.g. virtual cases), cap each
            epoch at the steps the real training nodules alone would take, so the optimiser budget is a real-only
            run's.
    """

    trunk: str = "resnet18"
    epochs: int = 16
    lr: float = 1e-3
    dropout: float = 0.2
    threads: int = 1
    tta: bool = True
    real_steps: bool = False

    def module(self, dm: L.LightningDataModule) -> MultiTaskModule:
        """A fresh tumor model: the trunk and a classification head, AdamW with a cosine schedule."""
        return MultiTaskModule(
            tasks=dm.tasks, heads={"tumor": partial(ClassificationHead, dropout=self.dropout)}, trunk=self.trunk,
            optimizer=partial(torch.optim.AdamW, lr=self.lr, weight_decay=1e-4),
            lr_scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=self.epochs),
        )

    def train_member(self, dm: L.LightningDataModule, fold: int | None, member: int, seed: int, out_dir: Path
                     ) -> dict:
        """Train ensemble member ``member`` (seed ``seed + 1000 member``) on test fold ``fold`` (``None``: the
        DataModule's fixed split), keep the checkpoint of best validation AUROC, and return its probabilities on
        the test and validation splits (``ids``, ``prob``, ``val_ids``, ``val_prob``) with ``best_score`` and
        ``fit_seconds``."""
        torch.set_num_threads(self.threads)
        if fold is not None:
            dm.select_fold(fold)
        L.seed_everything(seed + 1000 * member, workers=True)
        fitted = fit_best(self.module(dm), dm, out_dir, self.epochs, "val/tumor/auroc",
                          limit_train_batches=self._real_batches(dm) if self.real_steps else None)
        flips = TTA_FLIPS if self.tta else ((),)
        test, val = (predict(fitted.module.net, "tumor", loader, flips=flips)
                     for loader in (dm.test_dataloader(), dm.val_dataloader()))
        return {"fold": fold, "member": member, "ids": test.ids, "prob": test.probs.tolist(), "val_ids": val.ids,
                "val_prob": val.probs.tolist(), "best_score": fitted.best_score, "fit_seconds": fitted.seconds}


    @staticmethod
    def _real_batches(dm: L.LightningDataModule) -> int:
        extra = {r["id"] for r in dm.training_records}
        real = sum(r["id"] not in extra for r in dm.splits["train"])
        return max(1, math.ceil(real / dm.batch_size))


def record_features(dm: L.LightningDataModule, split: str, columns: Callable[[Sequence[dict]], np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``columns(records)`` ``[N, K]`` and the 0/1 labels ``[N]`` of a split's labelled nodules, in split order
    (e.g. the readers' diameter or outline geometry: baselines, never model inputs)."""
    records = labelled(dm.splits[split])
    return columns(records), np.array([r["label"][0] for r in records], dtype=float)


def log_diameter(records: Sequence[dict]) -> np.ndarray:
    """``[N, 1]``: log of the readers' mean diameter (mm), the size baseline's input."""
    return np.log(np.array([[r["diameter_mm"]] for r in records], dtype=float))


def batch_features(dm: L.LightningDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The batches' ``"features"`` ``[N, K]`` (measured on the image, e.g. radiomics) and the 0/1 labels of a
    split's labelled nodules, in split order."""
    dataset = {"train": dm.train_dataset, "val": dm.val_dataset, "test": dm.test_dataset}[split]
    rows = [i for i, r in enumerate(dm.splits[split]) if not np.isnan(r["label"][0])]
    features = np.stack([np.asarray(dataset[i]["features"], dtype=float) for i in rows])
    return features, np.array([dm.splits[split][i]["label"][0] for i in rows], dtype=float)


def regression(dm: L.LightningDataModule, features: SplitFeatures, split: str = "test") -> dict:
    """A standardised logistic regression on ``features``, fitted on the training split and scored on ``split``:
    ``auroc``, ``accuracy``, ``scores`` and the nodule ``ids``."""
    x_train, y_train = features("train")
    x_test, y_test = features(split)
    score = logistic_regression_scores(x_train, y_train, x_test)
    return {"auroc": float(roc_auc_score(y_test, score)), "accuracy": float(accuracy_score(y_test, score > 0.5)),
            "scores": score, "ids": [r["id"] for r in labelled(dm.splits[split])]}


def fold_stack(result: dict, features: SplitFeatures, names: Sequence[str]) -> tuple[FeatureStack | None, np.ndarray]:
    """The image model (validation probabilities in ``result``) stacked with a regression on ``features``:
    regression on the training nodules, stack weights on the validation nodules; ``(None, test features)`` when
    the data cannot fit one (e.g. one class in validation)."""
    (x_train, y_train), (x_val, y_val), (x_test, _) = (features(s) for s in ("train", "val", "test"))
    try:
        return FeatureStack.fit(x_train, y_train, np.asarray(result["val_prob"]), x_val, y_val, names), x_test
    except ValueError:
        return None, x_test
