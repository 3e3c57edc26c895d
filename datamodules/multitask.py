"""Several task DataModules as one: ``{task: batch}`` for training, one loader per task for evaluation."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import CombinedLoader

from datamodules.base import TaskDataModule
from ldoctor.tasks import TaskSpec, validate_tasks

TRAIN_MODES = ("max_size_cycle", "min_size", "max_size")


class MultiTaskDataModule(L.LightningDataModule):
    """Combine one DataModule per task.

    Training batches are ``{task_name: task_batch}`` from a ``CombinedLoader``; validation, test and
    predict run each task's loader in turn (``sequential``), so ``dataloader_idx`` follows ``task_names``.

    Args:
        datamodules: task name -> its DataModule; the name must equal ``datamodule.task.name``.
        mode: ``CombinedLoader`` mode for training: ``max_size_cycle`` (default: an epoch ends with the
            longest loader, shorter ones restart), ``min_size`` or ``max_size``.
    """

    def __init__(self, datamodules: dict[str, TaskDataModule], mode: str = "max_size_cycle") -> None:
        super().__init__()
        if not datamodules:
            raise ValueError("MultiTaskDataModule.datamodules is empty: give at least one task DataModule")
        if mode not in TRAIN_MODES:
            raise ValueError(f"MultiTaskDataModule.mode must be one of {TRAIN_MODES}, got {mode!r}")
        self.datamodules = dict(datamodules)
        self.mode = mode
        for name, dm in self.datamodules.items():
            if dm.task.name != name:
                raise ValueError(
                    f"MultiTaskDataModule.datamodules[{name!r}] serves task {dm.task.name!r}: "
                    "the keys must be task names"
                )

    @property
    def tasks(self) -> list[TaskSpec]:
        specs = [dm.task for dm in self.datamodules.values()]
        validate_tasks(specs)
        return specs

    @property
    def task_names(self) -> list[str]:
        return list(self.datamodules)

    def prepare_data(self) -> None:
        for dm in self.datamodules.values():
            dm.prepare_data()

    def setup(self, stage: str) -> None:
        for dm in self.datamodules.values():
            dm.setup(stage)

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader({n: dm.train_dataloader() for n, dm in self.datamodules.items()}, self.mode)

    def val_dataloader(self) -> CombinedLoader:
        return CombinedLoader({n: dm.val_dataloader() for n, dm in self.datamodules.items()}, "sequential")

    def test_dataloader(self) -> CombinedLoader:
        return CombinedLoader({n: dm.test_dataloader() for n, dm in self.datamodules.items()}, "sequential")

    def predict_dataloader(self) -> CombinedLoader:
        return CombinedLoader({n: dm.predict_dataloader() for n, dm in self.datamodules.items()}, "sequential")
