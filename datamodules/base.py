"""Base class of the single-task DataModules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from ldoctor.tasks import TaskSpec


class TaskDataModule(L.LightningDataModule):
    """One task's data: records -> datasets -> loaders.

    Subclasses build ``train_dataset``, ``val_dataset`` and (optionally) ``test_dataset`` in ``setup`` and
    expose their ``task``. Records are validated when they are built, so bad input fails before training.

    Args:
        batch_size: samples per batch.
        num_workers: loader worker processes (0 = load in the main process).
        pin_memory: pin host memory for faster copies to a GPU.
    """

    def __init__(self, batch_size: int = 16, num_workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None

    @property
    def task(self) -> TaskSpec:
        raise NotImplementedError

    @property
    def tasks(self) -> list[TaskSpec]:
        """The task list, so a single-task DataModule can feed ``model.tasks`` through the CLI link."""
        return [self.task]

    @property
    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """Collate function of every loader; ``None`` = PyTorch's default."""
        return None

    def _loader(
        self,
        dataset: Dataset | None,
        split: str,
        shuffle: bool,
        sampler: Sampler | None = None,
        batch_size: int | None = None,
    ) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"{type(self).__name__} has no {split} dataset: call setup() first, or the data has no {split} split"
            )
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate_fn,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, "train", shuffle=True)

    def sampled_train_dataloader(self, num_batches: int, batch_size: int, seed: int = 0) -> DataLoader:
        """``num_batches`` batches of ``batch_size`` training samples drawn with replacement (task mixing)."""
        generator = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(self.train_dataset, replacement=True, num_samples=num_batches * batch_size, generator=generator)
        return self._loader(self.train_dataset, "train", shuffle=False, sampler=sampler, batch_size=batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        dataset = self.predict_dataset if self.predict_dataset is not None else self.test_dataset
        return self._loader(dataset, "predict", shuffle=False)
