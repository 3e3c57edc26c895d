"""MedMNIST v2 ``.npz`` files (Yang et al., Scientific Data 2023) as a task, from config alone.

A MedMNIST 2D file holds ``{split}_images`` (``uint8 [N, H, W]`` grey or ``[N, H, W, 3]`` RGB) and
``{split}_labels`` (``[N, 1]`` class indices or ``[N, C]`` 0/1 multi-labels) for ``split`` in ``train``,
``val`` and, optionally, ``test``. The task kind follows from the labels: one column with classes {0, 1} ->
``binary``, one column with more classes -> ``multiclass``, several columns -> ``multilabel`` (ChestMNIST).

The default file is the PneumoniaMNIST train/val cut shipped in ``ldoctor/demo_data/pneumoniamnist``
(0 = normal, 1 = pneumonia; CC BY 4.0).

Example:
    >>> dm = MedMNISTDataModule(class_names=["pneumonia"])   # doctest: +SKIP
    >>> dm.task.kind, dm.task.num_outputs
    ('binary', 1)
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from monai.data import Dataset

import ldoctor
from datamodules.base import TaskDataModule
from ldoctor.data.labels import positive_weights
from ldoctor.data.transforms import (
    DEFAULT_AUGMENTATION,
    RadiographAugmentation,
    radiograph_postprocess,
    resize_uint8_batch,
)
from ldoctor.tasks import TaskSpec

#: PneumoniaMNIST train (4,707) / val (524) shipped with the package (no test split).
PNEUMONIAMNIST_DEMO = str(Path(ldoctor.__file__).parent / "demo_data/pneumoniamnist/pneumoniamnist_trainval.npz")
SPLITS = ("train", "val", "test")


def infer_task(labels: list[np.ndarray], name: str, class_names: list[str] | None) -> TaskSpec:
    """Task spec from the label arrays of all splits (each ``[N, 1]`` or ``[N, C]``).

    Args:
        labels: label arrays of the splits.
        name: task name.
        class_names: one name per output; for a binary task either ``[positive]`` or ``[negative, positive]``.
    """
    columns = labels[0].shape[1]
    if columns > 1:
        kind, outputs = "multilabel", columns
    else:
        classes = int(max(int(y.max()) for y in labels if y.size)) + 1
        kind, outputs = ("binary", 1) if classes <= 2 else ("multiclass", classes)
    if kind == "binary" and class_names is not None and len(class_names) == 2:
        class_names = class_names[1:]
    return TaskSpec(name=name, kind=kind, num_outputs=outputs, class_names=class_names)


def load_split(npz: np.lib.npyio.NpzFile, path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate ``{split}_images`` / ``{split}_labels``.

    Returns:
        images ``uint8 [N, H, W]`` or ``[N, H, W, 3]``; labels ``int64 [N, columns]``.

    Raises:
        ValueError: naming the file, the key and the row: wrong dtype or rank, count mismatch, labels that
            are not non-negative integers.
    """
    images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(
            f"{path}: {split}_images is {images.dtype} {images.shape}; expected uint8 [N, H, W] or [N, H, W, 3]"
        )
    labels = labels.reshape(len(labels), -1) if labels.ndim == 1 else labels
    if labels.ndim != 2 or len(labels) != len(images):
        raise ValueError(
            f"{path}: {split}_labels has shape {labels.shape} for {len(images)} images; expected [N, 1] or [N, C]"
        )
    as_float = labels.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(as_float).all(1) | (as_float < 0).any(1) | (as_float % 1 != 0).any(1))
    if bad.size:
        raise ValueError(
            f"{path}: {split}_labels row {bad[0]} is {labels[bad[0]].tolist()}; expected non-negative integers"
        )
    if labels.shape[1] > 1 and (labels > 1).any():
        row = int(np.flatnonzero((labels > 1).any(1))[0])
        raise ValueError(f"{path}: {split}_labels row {row} is {labels[row].tolist()}; expected 0/1 multi-labels")
    return images, labels.astype(np.int64)


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
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    @cached_property
    def splits(self) -> list[str]:
        """Splits present in the file (``train`` and ``val`` are required)."""
        with np.load(self.npz) as npz:
            keys = set(npz.files)
        present = [s for s in SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys]
        missing = [s for s in ("train", "val") if s not in present]
        if missing:
            raise ValueError(
                f"{self.npz}: no {missing[0]}_images / {missing[0]}_labels; found keys {sorted(keys)}; "
                "expected a MedMNIST file with train and val splits"
            )
        return present

    @cached_property
    def task(self) -> TaskSpec:  # type: ignore[override]
        with np.load(self.npz) as npz:
            labels = [load_split(npz, self.npz, s)[1] for s in self.splits]
        widths = {y.shape[1] for y in labels}
        if len(widths) > 1:
            raise ValueError(f"{self.npz}: the splits' labels have different widths {sorted(widths)}")
        return infer_task(labels, self.task_name, self.class_names)

    def setup(self, stage: str) -> None:
        if self.arrays is not None:
            return
        with np.load(self.npz) as npz:
            self.arrays = {s: load_split(npz, self.npz, s) for s in self.splits}
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

    def pos_weight(self) -> torch.Tensor:
        """``#negative / #positive`` per output over the training split, ``float32 [num_outputs]``.

        Binary and multilabel tasks only; pass it to the masked BCE loss.
        """
        if self.task.kind == "multiclass":
            raise ValueError(f"pos_weight is for binary/multilabel tasks; {self.task.name!r} is multiclass")
        return positive_weights(self.labels("train").astype(np.float32), self.task.class_names)
