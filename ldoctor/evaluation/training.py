"""Train a module under ``lightning.Trainer`` and keep the checkpoint of best validation score."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ldoctor.datamodule import LDoctorDataModule
from ldoctor.module import MultiTaskModule


@dataclass
class FitResult:
    """Attributes: the module with the best checkpoint's weights loaded, its validation score, its path and the
    training time in seconds."""

    module: MultiTaskModule
    best_score: float
    checkpoint: Path
    seconds: float


def fit_best(module: MultiTaskModule, data: LDoctorDataModule, out_dir: str | Path, max_epochs: int,
             monitor: str, mode: str = "max", accelerator: str = "cpu", limit_train_batches: int | None = None
             ) -> FitResult:
    """Fit ``module`` on ``data`` for ``max_epochs`` (CSV log and checkpoints under ``out_dir``), then load the
    weights of the epoch with the best ``monitor`` (chosen on validation only).

    Seed before calling (``lightning.seed_everything``) for a reproducible initialisation and batch order.
    ``limit_train_batches`` caps the optimiser steps of each epoch (the batches are still drawn from all of the
    shuffled training set).
    """
    out_dir = Path(out_dir)
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", monitor=monitor, mode=mode, save_top_k=1,
                                 filename="best")
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=max_epochs, callbacks=[checkpoint],
                        logger=CSVLogger(out_dir, name="logs"), enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        limit_train_batches=limit_train_batches)
    start = time.time()
    trainer.fit(module, datamodule=data)
    seconds = time.time() - start
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    return FitResult(module, float(checkpoint.best_model_score), Path(checkpoint.best_model_path), round(seconds, 1))
