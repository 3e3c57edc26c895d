"""MedMNIST v2 ``.npz`` files as one task, from config alone (:mod:`ldoctor.datasets.medmnist.records`).

Example:
    >>> dm = MedMNISTDataModule(class_names=["pneumonia"])   # doctest: +SKIP
    >>> dm.task.kind, dm.task.num_outputs
    ('binary', 1)
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from monai.data import Dataset

from ldoctor.datamodule import TaskDataModule
from ldoctor.datasets.medmnist.records import PNEUMONIAMNIST_DEMO, SPLITS, infer_task, load_split, open_npz
from ldoctor.errors import BadInput
from ldoctor.tasks import TaskSpec
from ldoctor.transforms.radiograph import (
    DEFAULT_AUGMENTATION,
    RadiographAugmentation,
    radiograph_postprocess,
    resize_uint8_batch,
)


class MedMNISTDataModule(TaskDataModule):
    """Any MedMNIST 2D ``.npz`` as one task.

    Batches: ``"image"`` ``float32 [B, 3, S, S]`` (grey repeated to 3 channels, ImageNet-normalised),
    ``"label"`` ``float32 [B, 1]`` (binary), ``[B, C]`` (multilabel) or ``[B]`` class indices (multiclass),
    ``"id"`` ``"{split}-{row}"``.

    Args:
        npz: the ``.npz`` file; default: the shipped PneumoniaMNIST train/val cut.
        task_name: name of the task (and of its head and logged keys).
        class_names: names of the outputs (binary: ``[positive]`` or ``[negative, positive]``); default
            ``class_0``, ...
        image_size: side ``S`` the images are resized to (bilinear), pixels.
        augmentation: training augmentation; ``None`` trains without.
        val_from_train: for a file without a test split (the shipped PneumoniaMNIST cut): test on the file's
            validation split and validate on this share of the training images instead (drawn with ``seed``; MedMNIST
            files carry no patient ids, so this split is by image). ``None``: the file's splits as they are.
        seed: seed of that draw.
        batch_size: samples per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory for GPU copies.
    """

    def __init__(
        self,
        npz: str = PNEUMONIAMNIST_DEMO,
        task_name: str = "disease",
        class_names: list[str] | None = None,
        image_size: int = 64,
        augmentation: RadiographAugmentation | None = DEFAULT_AUGMENTATION,
        val_from_train: float | None = None,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.npz = str(npz)
        if not Path(self.npz).is_file():
            raise FileNotFoundError(f"{self.npz}: MedMNIST .npz not found; check data.npz")
        self.task_name, self.class_names = task_name, class_names
        self.image_size = image_size
        self.augmentation = augmentation
        if val_from_train is not None and not 0 < val_from_train < 1:
            raise ValueError(f"val_from_train must be in (0, 1), got {val_from_train}")
        self.val_from_train, self.seed = val_from_train, seed
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def inference_settings(self) -> dict[str, Any]:
        """A report reads a new radiograph resized and padded to ``image_size``, as these arrays were."""
        return {"input": "radiograph", "image_size": int(self.image_size),
                "description": f"MedMNIST {Path(self.npz).name}"}

    @cached_property
    def splits(self) -> list[str]:
        """Splits present in the file (``train`` and ``val`` are required)."""
        with open_npz(self.npz) as npz:
            keys = set(npz.files)
        present = [s for s in SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys]
        missing = [s for s in ("train", "val") if s not in present]
        if missing:
            raise BadInput(
                f"{self.npz}: no {missing[0]}_images / {missing[0]}_labels; found keys {sorted(keys)}; "
                "expected a MedMNIST file with train and val splits"
            )
        return present

    @cached_property
    def task(self) -> TaskSpec:  # type: ignore[override]
        with open_npz(self.npz) as npz:
            labels = [load_split(npz, self.npz, s)[1] for s in self.splits]
        widths = {y.shape[1] for y in labels}
        if len(widths) > 1:
            raise ValueError(f"{self.npz}: the splits' labels have different widths {sorted(widths)}")
        return infer_task(labels, self.task_name, self.class_names)

    def setup(self, stage: str) -> None:
        if self.arrays is not None:
            return
        with open_npz(self.npz) as npz:
            self.arrays = {s: load_split(npz, self.npz, s) for s in self.splits}
        if self.val_from_train is not None:
            self.arrays = self._validate_on_train(self.arrays)
        if "test" not in self.arrays:
            rank_zero_warn(f"{self.npz} has no test split: test() and predict() are unavailable")
        posts = {
            "train": radiograph_postprocess(self.augmentation, self.image_size),
            "val": radiograph_postprocess(None, self.image_size),
            "test": radiograph_postprocess(None, self.image_size),
        }
        datasets = {split: Dataset(self._records(split), posts[split]) for split in self.arrays}
        self.train_dataset, self.val_dataset = datasets["train"], datasets["val"]
        self.test_dataset = datasets.get("test")

    def _validate_on_train(self, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
        """The file's validation split becomes the test split; ``val_from_train`` of the training images validate."""
        if "test" in arrays:
            raise ValueError(f"{self.npz} has a test split: val_from_train is for files without one")
        images, labels = arrays["train"]
        order = np.random.default_rng(self.seed).permutation(len(images))
        val, train = order[: round(self.val_from_train * len(images))], order[round(self.val_from_train * len(images)):]
        return {"train": (images[train], labels[train]), "val": (images[val], labels[val]), "test": arrays["val"]}

    def _records(self, split: str) -> list[dict]:
        """Records holding the resized ``uint8 [C, S, S]`` images (the in-memory cache of the deterministic part)."""
        assert self.arrays is not None
        images, labels = self.arrays[split]
        images = resize_uint8_batch(images, self.image_size)
        target = labels[:, 0] if self.task.kind == "multiclass" else labels
        target = target.astype(np.float32)
        return [{"image": images[i], "label": target[i], "id": f"{split}-{i}"} for i in range(len(images))]

    def labels(self, split: str = "train") -> np.ndarray:
        """Label array of a split (after ``setup``): ``int64 [N, columns]``."""
        if self.arrays is None:
            raise RuntimeError("MedMNISTDataModule.labels: call setup() first")
        return self.arrays[split][1]

    def train_labels(self) -> torch.Tensor:
        """Training labels as the batches carry them: ``[N, columns]`` (binary, multilabel) or ``[N]`` (multiclass)."""
        self.setup("fit")
        labels = self.labels("train").astype(np.float32)
        return torch.from_numpy(labels[:, 0] if self.task.kind == "multiclass" else labels)
