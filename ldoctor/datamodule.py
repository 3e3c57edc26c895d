"""The data contract: what :class:`~ldoctor.module.MultiTaskModule` and ldoctor's callbacks read from a DataModule.

Two classes declare it:

- :class:`TaskDataModule`: one task's data (records -> datasets -> loaders). A dataset family subclasses it
  (``datamodules/<family>.py``) and provides ``task``, ``train_labels()`` and the datasets built in ``setup``.
- :class:`LDoctorDataModule`: any DataModule the module trains on: its ``tasks`` (in the order of its evaluation
  loaders, so ``dataloader_idx`` -> task) and ``member(task)``, the :class:`TaskDataModule` serving a task.
  ``datamodules.multitask.MultiTaskDataModule`` implements it over one member per task; a :class:`TaskDataModule`
  is its own only member.

Nothing else is read from a DataModule: no attribute probing. Class balance (``pos_weight="auto"``) and head priors
derive from ``train_labels()`` (:mod:`ldoctor.labels`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from ldoctor.tasks import TaskSpec


class LDoctorDataModule(L.LightningDataModule, ABC):
    """A DataModule ldoctor can train on: its tasks and, per task, the DataModule that serves it."""

    @property
    @abstractmethod
    def tasks(self) -> list[TaskSpec]:
        """The task specs, in the order of the evaluation loaders (linked to ``model.tasks`` by the CLI)."""

    @abstractmethod
    def member(self, task: str) -> TaskDataModule:
        """The :class:`TaskDataModule` serving ``task``.

        Raises:
            KeyError: naming the task and the tasks served.
        """

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


class TaskDataModule(LDoctorDataModule):
    """One task's data: records -> datasets -> loaders.

    Subclasses provide ``task`` and ``train_labels()`` and build ``train_dataset``, ``val_dataset`` and (optionally)
    ``test_dataset`` / ``predict_dataset`` in ``setup``. Records are validated when they are built, so bad input
    fails before training.

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

    # ------------------------------------------------------------------------------------------ contract
    @property
    @abstractmethod
    def task(self) -> TaskSpec:
        """The task this DataModule serves."""

    @abstractmethod
    def train_labels(self) -> torch.Tensor:
        """Labels of the training samples as the batches carry them: float ``[N, num_outputs]`` (binary,
        multilabel) or ``[N]`` class indices (multiclass); NaN = unknown. Builds the data if needed."""

    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of the batches' ``"features"`` ``[B, K]`` (per-sample scalar measurements, e.g. a
        nodule's radiomics); empty when batches carry none. Default: none."""
        return []

    def inference_settings(self) -> dict[str, Any]:
        """How this DataModule turns one case's files into the model's input, as plain values, so that a report
        reads a new case as the training data were read (saved in checkpoints under ``"ldoctor_inference"``,
        :mod:`ldoctor.report.model_info`). ``"input"`` names the case reader: ``"ct_nodule"`` (with the patch
        settings), ``"radiograph"`` (with ``image_size``) or ``"history"``; ``"description"`` says what the model
        was trained on. Default ``{}``: no case reader (e.g. synthetic data)."""
        return {}

    @property
    def tasks(self) -> list[TaskSpec]:
        """``[task]``, so a single-task DataModule feeds ``model.tasks`` through the CLI link."""
        return [self.task]

    def member(self, task: str) -> TaskDataModule:
        if task != self.task.name:
            raise KeyError(f"{type(self).__name__} serves task {self.task.name!r}, not {task!r}")
        return self

    # ------------------------------------------------------------------------------------------ loaders
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
        sampler = RandomSampler(self.train_dataset, replacement=True, num_samples=num_batches * batch_size,
                                generator=generator)
        return self._loader(self.train_dataset, "train", shuffle=False, sampler=sampler, batch_size=batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        dataset = self.predict_dataset if self.predict_dataset is not None else self.test_dataset
        return self._loader(dataset, "predict", shuffle=False)
