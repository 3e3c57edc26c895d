"""NIH ChestX-ray14 (Wang et al., CVPR 2017) as the ``disease`` task, read from the layout users unpack.

Files, labels and the patient-wise splits: :mod:`ldoctor.datasets.nih.records`. The test split is, in this order
of precedence: every image of a separate ``test_root`` (then every image of ``root`` trains or validates), fold
``fold`` of ``folds`` patient-grouped folds over ``root``, the official ``test_list.txt``, or a seeded share of
the patients. Validation is always carved out of the remaining patients.

Example:
    >>> dm = ChestXray14DataModule(root="/data/nih-cxr14", cache="disk", cache_dir="cache/chestxray14")  # doctest: +SKIP
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))                          # doctest: +SKIP
    >>> batch["image"].shape, batch["label"].shape                # ([32, 3, 224, 224], [32, 14])
    >>> from ldoctor.datasets.nih import NIH_DEMO  # the shipped 837 real images at 64 px, no list files
    >>> cv = ChestXray14DataModule(root=NIH_DEMO, image_size=64, folds=5, fold=0)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose

from ldoctor.datamodule import TaskDataModule
from ldoctor.datasets.nih.records import (
    NIHFolder,
    NIHSplits,
    check_disjoint_folders,
    disease_task,
    read_nih_folder,
    split_nih,
)
from ldoctor.errors import BadInputLog
from ldoctor.tasks import TaskSpec
from ldoctor.transforms.cache import CacheMode, cached_dataset, check_cache, preprocess_records
from ldoctor.transforms.radiograph import (
    DEFAULT_AUGMENTATION,
    RADIOGRAPH_FILE,
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
        test_root: a separate test folder in the same layout (its own label table and images): the test split is
            every image of it, and every image of ``root`` trains or validates (``root``'s list files,
            ``test_fraction`` and ``folds`` unused). A patient in both folders is refused.
        image_size: side ``S`` of the training tensors, pixels.
        val_fraction: share of the non-test patients carved out for validation (checkpoint selection).
        test_fraction: share of patients in test when there are no list files, folds or test root.
        seed: seed of the patient-wise splits (the same for every fold of one cross-validation).
        folds: patient-grouped K-fold cross-validation over every image of ``root`` (list files unused): the test
            split is fold ``fold`` of ``folds`` (:func:`ldoctor.evaluation.splits.patient_folds`), so over
            ``fold = 0 .. folds - 1`` every image is tested once. ``select_fold`` moves to another fold without
            reading the data again.
        fold: the test fold (0-based) when ``folds`` is set.
        view_positions: keep only these ``View Position`` values (e.g. ``["PA"]``); ``None`` keeps all.
        max_follow_up: keep only rows with ``Follow-up #`` <= this (0 = each patient's first study).
        augmentation: training augmentation; ``None`` trains without augmentation.
        cache: where the decoded, resized ``uint8`` images are kept (:mod:`ldoctor.transforms.cache`): ``"none"``
            (decode every epoch), ``"memory"`` (``S * S`` bytes per image, shared by every split and fold; every
            image is decoded in ``setup``) or ``"disk"`` (under ``cache_dir``, decoded on first use).
        cache_dir: on-disk cache folder for ``cache="disk"`` (never inside ``root`` or ``test_root``).
        skip_bad: skip bad rows and files (counted in ``skipped`` and warned) instead of raising. Files that fail
            only when decoded (corrupt data inside a complete PNG) are skipped with ``cache="memory"``, which decodes
            them in ``setup``; with ``"none"`` / ``"disk"`` they fail while a batch is loaded, naming the file.
        batch_size: samples per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory for GPU copies.
    """

    def __init__(
        self,
        root: str,
        test_root: str | None = None,
        image_size: int = 224,
        # the patient split and the rows kept
        val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
        folds: int | None = None, fold: int = 0,
        view_positions: list[str] | None = None, max_follow_up: int | None = None,
        augmentation: RadiographAugmentation | None = DEFAULT_AUGMENTATION,
        # reading and loading
        cache: CacheMode = "none", cache_dir: str | None = None, skip_bad: bool = False,
        batch_size: int = 32, num_workers: int = 0, pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"val_fraction, test_fraction: {val_fraction}, {test_fraction}; expected [0, 1)")
        if folds is not None and (folds < 2 or not 0 <= fold < folds):
            raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
        self.root = Path(root)
        self.test_root = Path(test_root) if test_root is not None else None
        self.image_size = image_size
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.folds, self.fold = (None, 0) if test_root is not None else (folds, fold)
        self.view_positions = [v.upper() for v in view_positions] if view_positions else None
        self.max_follow_up = max_follow_up
        self.augmentation = augmentation
        if self.test_root is not None:
            check_cache(cache, cache_dir, self.test_root)
        self.cache, self.cache_dir = cache, check_cache(cache, cache_dir, root)
        source = f"ChestX-ray14 {self.root}" + (f" (test: {self.test_root})" if self.test_root is not None else "")
        self.bad = BadInputLog(skip_bad, source)
        self.folder: NIHFolder | None = None
        self.test_folder: NIHFolder | None = None
        self.data: NIHSplits | None = None
        self._memory: dict[int, dict[str, dict | None]] = {}  # image size -> the in-memory cache of that size

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
    def protocol(self) -> str:
        """How the test split was made (after ``setup``): ``"official"``, ``"seeded"``, ``"fold k of K"`` or
        ``"test root"``."""
        return self.data.protocol if self.data is not None else ""

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
        # list files only decide the test split when nothing else does
        lists = self.test_root is None and self.folds is None
        self.folder = read_nih_folder(self.root, self.bad, self.view_positions, self.max_follow_up, lists)
        if self.test_root is not None:
            self.test_folder = read_nih_folder(self.test_root, self.bad, self.view_positions, self.max_follow_up,
                                               lists=False)
            check_disjoint_folders(self.folder, self.test_folder)
        if self.cache == "memory":
            for folder in (self.folder, self.test_folder):
                if folder is not None:
                    self._keep_decodable(folder)
        self.bad.summary()
        self._split()

    def _keep_decodable(self, folder: NIHFolder) -> None:
        """``cache="memory"``: decode every image of ``folder`` into the cache now; an image that fails raises naming
        the file or (``skip_bad``) leaves the folder's records, counted, before the patient split."""
        kept = preprocess_records(list(folder.records.values()), radiograph_preprocess(self.image_size),
                                  self._memory.setdefault(self.image_size, {}), self.bad, RADIOGRAPH_FILE)
        folder.records = {r["id"]: r for r in kept}

    def _split(self) -> None:
        assert self.folder is not None
        self.data = split_nih(self.folder, self.val_fraction, self.test_fraction, self.seed, self.folds, self.fold,
                              self.test_folder)
        datasets = {split: self._dataset(records, self.image_size, split == "train")
                    for split, records in self.data.records.items()}
        self.train_dataset, self.val_dataset, self.test_dataset = datasets["train"], datasets["val"], datasets["test"]

    def _dataset(self, records: list[dict], image_size: int, train: bool,
                 postprocess: Compose | None = None) -> Dataset:
        """Records through the cached deterministic step at ``image_size`` (own cache folder / store per size),
        then ``postprocess`` (default: the radiograph postprocessing, augmented for training)."""
        folder = self.cache_dir / f"chestxray14_{image_size}px" if self.cache_dir is not None else None
        if postprocess is None:
            postprocess = radiograph_postprocess(self.augmentation if train else None, image_size)
            postprocess.set_random_state(seed=self.seed)  # MONAI's Rand*d draw from their own generator
        return cached_dataset(records, radiograph_preprocess(image_size), postprocess, self.cache, folder,
                              self._memory.setdefault(image_size, {}), self.bad, RADIOGRAPH_FILE)

    def select_fold(self, fold: int) -> None:
        """Move to test fold ``fold`` (needs ``folds``); the folders are not read again and caches are reused."""
        if self.folds is None or not 0 <= fold < self.folds:
            raise ValueError(f"select_fold({fold}) needs folds set and 0 <= fold < folds (folds={self.folds})")
        self.fold = fold
        if self.folder is None:
            self.setup("fit")
            return
        self._split()

    def labels(self, split: str = "train") -> np.ndarray:
        """``float32 [N, 14]`` labels of a split (after ``setup``), in record (= loader) order."""
        if self.data is None:
            raise RuntimeError("ChestXray14DataModule.labels: call setup() first")
        return np.stack([r["label"] for r in self.data.records[split]])

    def patient_ids(self, split: str = "test") -> list[int]:
        """The patient of every image of a split (after ``setup``), in record (= loader) order."""
        if self.data is None or self.folder is None:
            raise RuntimeError("ChestXray14DataModule.patient_ids: call setup() first")
        folder = self.test_folder if split == "test" and self.test_folder is not None else self.folder
        patient_of = folder.patient_of
        return [patient_of[r["id"]] for r in self.data.records[split]]

    def pixels(self, split: str, image_size: int | None = None) -> np.ndarray:
        """The grey pixels of a split's images after the deterministic step (decode, resize the longer side to
        ``S``, pad to a square), through the same cache: ``uint8 [N, S, S]`` in record (= loader) order, no
        augmentation or normalisation. For baselines on raw pixels.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            image_size: ``S``; default the DataModule's ``image_size``.
        """
        if self.data is None:
            raise RuntimeError("ChestXray14DataModule.pixels: call setup() first")
        dataset = self._dataset(self.data.records[split], image_size or self.image_size, train=False,
                                postprocess=Compose([]))
        return np.stack([np.asarray(dataset[i]["image"])[0] for i in range(len(dataset))])

    def inference_settings(self) -> dict[str, Any]:
        """A report reads a new radiograph as these were: decoded, resized and padded to ``image_size``."""
        return {"input": "radiograph", "image_size": int(self.image_size),
                "description": "NIH ChestX-ray14 radiographs, the 14 findings"}

    def train_labels(self) -> torch.Tensor:
        self.setup("fit")
        return torch.from_numpy(self.labels("train"))
