"""NIH ChestX-ray14 (Wang et al., CVPR 2017) as the ``disease`` task, read from the layout users unpack.

Files, labels and the patient-wise splits (official list files when present): :mod:`ldoctor.datasets.nih.records`.

Example:
    >>> dm = ChestXray14DataModule(root="/data/nih-cxr14", cache="disk", cache_dir="cache/chestxray14")  # doctest: +SKIP
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))                          # doctest: +SKIP
    >>> batch["image"].shape, batch["label"].shape                # ([32, 3, 224, 224], [32, 14])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ldoctor.datamodule import TaskDataModule
from ldoctor.datasets.nih.records import NIHSplits, disease_task, read_nih
from ldoctor.errors import BadInputLog
from ldoctor.tasks import TaskSpec
from ldoctor.transforms.cache import CacheMode, cached_dataset, check_cache
from ldoctor.transforms.radiograph import (
    DEFAULT_AUGMENTATION,
    RadiographAugmentation,
    radiograph_postprocess,
    radiograph_preprocess,
)


class ChestXray14DataModule(TaskDataModule):
    """NIH ChestX-ray14 radiographs and their 14 findings as the ``disease`` task.

    Batches: ``"image"`` ``float32 [B, 3, S, S]`` (ImageNet-normalised), ``"label"`` ``float32 [B, 14]``
    (0/1), ``"id"`` the image file names.

    Args:
        root: folder holding the label table, the images and (optionally) the split lists.
        image_size: side ``S`` of the training tensors, pixels.
        val_fraction: share of train_val patients carved out for validation.
        test_fraction: share of patients in test when there are no list files.
        seed: seed of the patient-wise splits.
        view_positions: keep only these ``View Position`` values (e.g. ``["PA"]``); ``None`` keeps all.
        max_follow_up: keep only rows with ``Follow-up #`` <= this (0 = each patient's first study).
        augmentation: training augmentation; ``None`` trains without augmentation.
        cache: where the decoded, resized ``uint8`` images are kept (:mod:`ldoctor.transforms.cache`): ``"none"``
            (decode every epoch), ``"memory"`` (``S * S`` bytes per image) or ``"disk"`` (under ``cache_dir``).
        cache_dir: on-disk cache folder for ``cache="disk"`` (never inside ``root``).
        skip_bad: skip bad rows and files (counted in ``skipped`` and warned) instead of raising.
        batch_size: samples per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory for GPU copies.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        # the patient split and the rows kept
        val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
        view_positions: list[str] | None = None, max_follow_up: int | None = None,
        augmentation: RadiographAugmentation | None = DEFAULT_AUGMENTATION,
        # reading and loading
        cache: CacheMode = "none", cache_dir: str | None = None, skip_bad: bool = False,
        batch_size: int = 32, num_workers: int = 0, pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"val_fraction, test_fraction: {val_fraction}, {test_fraction}; expected [0, 1)")
        self.root = Path(root)
        self.image_size = image_size
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.view_positions = [v.upper() for v in view_positions] if view_positions else None
        self.max_follow_up = max_follow_up
        self.augmentation = augmentation
        self.cache, self.cache_dir = cache, check_cache(cache, cache_dir, root)
        self.bad = BadInputLog(skip_bad, f"ChestX-ray14 {self.root}")
        self.data: NIHSplits | None = None

    @property
    def task(self) -> TaskSpec:
        return disease_task()

    @property
    def skipped(self) -> dict[str, int]:
        """Bad input skipped with ``skip_bad``, by kind."""
        return self.bad.counts

    @property
    def official_split(self) -> bool:
        """The test split is the official ``test_list.txt`` (after ``setup``)."""
        return self.data is not None and self.data.official

    @property
    def records(self) -> dict[str, list[dict]]:
        """Records per split (after ``setup``): ``{"image": path, "label": float32 [14], "id": file name}``."""
        return self.data.records if self.data is not None else {}

    @property
    def patients(self) -> dict[str, set[int]]:
        """Patient ids per split (after ``setup``)."""
        return self.data.patients if self.data is not None else {}

    def setup(self, stage: str) -> None:
        if self.data is not None:
            return
        self.data = read_nih(self.root, self.bad, self.val_fraction, self.test_fraction, self.seed,
                             self.view_positions, self.max_follow_up)
        pre = radiograph_preprocess(self.image_size)
        folder = self.cache_dir / f"chestxray14_{self.image_size}px" if self.cache_dir is not None else None
        memory: dict[str, dict] = {}
        datasets = {
            split: cached_dataset(records, pre, radiograph_postprocess(self.augmentation if split == "train" else None,
                                                                       self.image_size), self.cache, folder, memory)
            for split, records in self.data.records.items()
        }
        self.train_dataset, self.val_dataset, self.test_dataset = datasets["train"], datasets["val"], datasets["test"]

    def labels(self, split: str = "train") -> np.ndarray:
        """``float32 [N, 14]`` labels of a split (after ``setup``)."""
        if self.data is None:
            raise RuntimeError("ChestXray14DataModule.labels: call setup() first")
        return np.stack([r["label"] for r in self.data.records[split]])

    def train_labels(self) -> torch.Tensor:
        self.setup("fit")
        return torch.from_numpy(self.labels("train"))
