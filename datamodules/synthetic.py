"""DataModules over the synthetic datasets of :mod:`ldoctor.datasets.synthetic` (smoke runs, tests, benchmarks)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ldoctor.datamodule import TaskDataModule
from ldoctor.datasets.lidc import tumor_task
from ldoctor.datasets.mimic import drug_task
from ldoctor.datasets.nih import disease_task
from ldoctor.datasets.synthetic import SyntheticHistories, SyntheticNoduleViews, SyntheticRadiographs
from ldoctor.tasks import TaskSpec


class _SyntheticDataModule(TaskDataModule):
    def __init__(self, num_train: int, num_val: int, num_test: int, seed: int, batch_size: int, num_workers: int):
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.num_train, self.num_val, self.num_test, self.seed = num_train, num_val, num_test, seed

    def _make(self, num_samples: int, seed: int) -> Dataset:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        self.train_dataset = self._make(self.num_train, self.seed)
        self.val_dataset = self._make(self.num_val, self.seed + 1)
        self.test_dataset = self._make(self.num_test, self.seed + 2)

    def train_labels(self) -> torch.Tensor:
        data = self._make(self.num_train, self.seed)
        return torch.stack([torch.as_tensor(data[i]["label"], dtype=torch.float32) for i in range(len(data))])


class SyntheticTumorDataModule(_SyntheticDataModule):
    """``tumor`` task on ``SyntheticNoduleViews``: ``image`` ``[B, views, 3, S, S]``, ``label`` ``[B, 1]``."""

    def __init__(self, num_train: int = 256, num_val: int = 64, num_test: int = 64, image_size: int = 32,
                 views: int = 3, unknown_fraction: float = 0.0, seed: int = 0, batch_size: int = 16,
                 num_workers: int = 0) -> None:
        super().__init__(num_train, num_val, num_test, seed, batch_size, num_workers)
        self.image_size, self.views, self.unknown_fraction = image_size, views, unknown_fraction

    @property
    def task(self) -> TaskSpec:
        return tumor_task()

    def _make(self, num_samples: int, seed: int) -> SyntheticNoduleViews:
        return SyntheticNoduleViews(num_samples, self.image_size, self.views, seed, self.unknown_fraction)


class SyntheticDiseaseDataModule(_SyntheticDataModule):
    """``disease`` task (14 findings) on ``SyntheticRadiographs``: ``image`` ``[B, 3, S, S]``."""

    def __init__(self, num_train: int = 256, num_val: int = 64, num_test: int = 64, image_size: int = 32,
                 seed: int = 0, batch_size: int = 16, num_workers: int = 0) -> None:
        super().__init__(num_train, num_val, num_test, seed, batch_size, num_workers)
        self.image_size = image_size

    @property
    def task(self) -> TaskSpec:
        return disease_task()

    def _make(self, num_samples: int, seed: int) -> SyntheticRadiographs:
        return SyntheticRadiographs(num_samples, self.image_size, len(self.task.class_names), seed=seed)


class SyntheticDrugDataModule(_SyntheticDataModule):
    """``drug`` task on ``SyntheticHistories``: ``codes`` ``[B, admissions, codes]``, ``label`` ``[B, drugs]``."""

    def __init__(self, num_train: int = 256, num_val: int = 64, num_test: int = 64, vocab_size: int = 40,
                 num_drugs: int = 8, max_admissions: int = 3, image_size: int = 0, image_fraction: float = 0.0,
                 seed: int = 0, batch_size: int = 16, num_workers: int = 0) -> None:
        super().__init__(num_train, num_val, num_test, seed, batch_size, num_workers)
        self.vocab_size, self.num_drugs, self.max_admissions = vocab_size, num_drugs, max_admissions
        self.image_size, self.image_fraction = image_size, image_fraction

    def _make(self, num_samples: int, seed: int) -> SyntheticHistories:
        return SyntheticHistories(num_samples, self.vocab_size, self.num_drugs, self.max_admissions,
                                  image_size=self.image_size, image_fraction=self.image_fraction, seed=seed)

    @property
    def task(self) -> TaskSpec:
        data = self._make(0, 0)
        return drug_task(data.drug_vocabulary, data.code_vocabulary)
