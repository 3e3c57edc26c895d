"""NIH ChestX-ray14 (Wang et al., CVPR 2017) as the ``disease`` task, read from the layout users unpack.

Expected under ``root`` (as released by the NIH Clinical Center, or as on Kaggle):

- the label table ``Data_Entry_2017_v2020.csv`` or ``Data_Entry_2017.csv``, plain or ``.gz``, with the
  columns ``Image Index``, ``Finding Labels`` (findings joined by ``|``, or ``No Finding``), ``Patient ID``,
  ``Follow-up #``, ``View Position`` (``PA``/``AP``);
- the PNGs in ``images/`` or in the release's nested ``images_001/images/`` ... ``images_012/images/``;
- optionally ``train_val_list.txt`` and ``test_list.txt`` (the official patient-wise split, one file name a
  line). Validation is carved out of ``train_val`` by patient. Without the list files a seeded patient-wise
  train/val/test split is drawn, with a warning that results are not comparable to the official split.

Labels are the 14 findings in ``ldoctor.tasks.CHESTXRAY14_FINDINGS`` order; ``No Finding`` is the all-zero
row. No patient is ever in two splits (checked when the splits are built).

Example:
    >>> dm = ChestXray14DataModule(root="/data/nih-cxr14", cache_dir="cache/chestxray14")  # doctest: +SKIP
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))                          # doctest: +SKIP
    >>> batch["image"].shape, batch["label"].shape                # ([32, 3, 224, 224], [32, 14])
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_warn

from datamodules.base import TaskDataModule
from ldoctor.data.cache import cached_dataset, check_cache_dir
from ldoctor.data.labels import positive_weights
from ldoctor.data.transforms import (
    DEFAULT_AUGMENTATION,
    RadiographAugmentation,
    check_png,
    radiograph_postprocess,
    radiograph_preprocess,
)
from ldoctor.tasks import CHESTXRAY14_FINDINGS, TaskSpec, disease_task

log = logging.getLogger(__name__)

LABEL_TABLES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
)
IMAGE_COLUMN = "Image Index"
FINDINGS_COLUMN = "Finding Labels"
PATIENT_COLUMN = "Patient ID"
FOLLOW_UP_COLUMN = "Follow-up #"
VIEW_COLUMN = "View Position"
REQUIRED_COLUMNS = (IMAGE_COLUMN, FINDINGS_COLUMN, PATIENT_COLUMN)
NO_FINDING = "No Finding"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
SPLITS = ("train", "val", "test")


class BadInput(ValueError):
    """A bad file or row in the user's data (``skip_bad=True`` skips these instead of raising)."""


def find_label_table(root: str | Path) -> Path:
    """The label table under ``root``, preferring the 2020 revision and plain CSV."""
    root = Path(root)
    for name in LABEL_TABLES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"{root}: no ChestX-ray14 label table; expected one of {', '.join(LABEL_TABLES)}; check data.root"
    )


def read_label_table(path: str | Path, columns: Sequence[str] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """Read ``Data_Entry_2017*.csv[.gz]`` and check that ``columns`` are present and image names unique.

    Returns:
        The table with ``Image Index`` as ``str``, ``Patient ID`` as ``int`` and a default ``RangeIndex``
        (row ``i`` is line ``i + 2`` of the file).

    Raises:
        ValueError: missing columns, empty table, duplicate image names, non-integer patient ids.
    """
    path = Path(path)
    table = pd.read_csv(path, dtype={IMAGE_COLUMN: str, FINDINGS_COLUMN: str})
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; expected the NIH Data_Entry_2017 columns {list(columns)}, "
            f"found {list(table.columns)}"
        )
    if table.empty:
        raise ValueError(f"{path}: the label table has no rows")
    duplicated = table[IMAGE_COLUMN].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise ValueError(f"{path} line {row + 2}: image {table[IMAGE_COLUMN][row]!r} is listed twice")
    patients = pd.to_numeric(table[PATIENT_COLUMN], errors="coerce")
    if patients.isna().any():
        row = int(np.flatnonzero(patients.isna())[0])
        raise ValueError(
            f"{path} line {row + 2}: Patient ID {table[PATIENT_COLUMN][row]!r}; expected an integer id"
        )
    table[PATIENT_COLUMN] = patients.astype(np.int64)
    return table


def findings_matrix(
    findings: pd.Series, path: str | Path = "label table", classes: Sequence[str] = CHESTXRAY14_FINDINGS
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Turn ``Finding Labels`` strings into a 0/1 matrix.

    Args:
        findings: one ``"A|B"`` / ``"No Finding"`` string per row.
        path: the table's file, for messages.
        classes: column order of the matrix.

    Returns:
        ``float32 [rows, len(classes)]`` (``No Finding`` = all zero) and the bad rows as
        ``(row, reason)`` (their matrix rows are NaN): unknown names, empty cells, ``No Finding`` mixed with
        findings.
    """
    text = findings.fillna("").astype(str).str.replace(" ", "", regex=False)
    dummies = text.str.get_dummies(sep="|")
    known = [c.replace(" ", "") for c in classes]
    no_finding = NO_FINDING.replace(" ", "")
    matrix = dummies.reindex(columns=known, fill_value=0).to_numpy(np.float32, copy=True)
    bad: dict[int, str] = {}
    for column in dummies.columns:
        if column in known or column == no_finding:
            continue
        for row in np.flatnonzero(dummies[column].to_numpy()):
            bad.setdefault(int(row), f"unknown finding {column!r}; expected {list(classes)} or No Finding")
    if no_finding in dummies.columns:
        mixed = (dummies[no_finding].to_numpy() == 1) & (matrix.sum(axis=1) > 0)
        for row in np.flatnonzero(mixed):
            bad.setdefault(int(row), f"{NO_FINDING!r} together with findings")
    empty = (dummies.sum(axis=1).to_numpy() == 0) if len(dummies.columns) else np.ones(len(text), bool)
    for row in np.flatnonzero(empty):
        bad.setdefault(int(row), f"empty {FINDINGS_COLUMN!r}; expected findings joined by '|' or No Finding")
    if bad:
        matrix[sorted(bad)] = np.nan
    return matrix, [(row, f"{path} line {row + 2}: {reason}") for row, reason in sorted(bad.items())]


def index_images(root: str | Path) -> dict[str, Path]:
    """Map PNG file name -> path over ``root/images/`` and the release's ``root/images_*/images/``."""
    root = Path(root)
    folders = [root / "images"] + sorted(p / "images" for p in root.glob("images_*") if p.is_dir())
    index: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".png") and entry.is_file():
                    index.setdefault(entry.name, Path(entry.path))
    return index


def read_list_file(path: str | Path) -> list[str]:
    """File names of an NIH split list (one per line; blank lines ignored)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def split_by_patient(
    table: pd.DataFrame,
    test_names: set[str] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Patient-wise train/val/test split of the (filtered) label table.

    Args:
        table: rows to split.
        test_names: official test images (``test_list.txt``); ``None`` draws a seeded test split of
            ``test_fraction`` of the patients. Validation takes ``val_fraction`` of the remaining patients.
        val_fraction: share of (train_val) patients in validation.
        test_fraction: share of patients in test when ``test_names`` is ``None``.
        seed: seed of the patient shuffle.

    Returns:
        ``{"train" | "val" | "test": rows}``.
    """
    rng = np.random.default_rng(seed)
    if test_names is None:
        patients = rng.permutation(np.unique(table[PATIENT_COLUMN].to_numpy()))
        n_test = int(round(test_fraction * len(patients)))
        test_mask = table[PATIENT_COLUMN].isin(patients[:n_test]).to_numpy()
    else:
        test_mask = table[IMAGE_COLUMN].isin(test_names).to_numpy()
    train_val = table[~test_mask]
    patients = rng.permutation(np.unique(train_val[PATIENT_COLUMN].to_numpy()))
    n_val = int(round(val_fraction * len(patients)))
    if val_fraction > 0 and len(patients) > 1:
        n_val = min(max(n_val, 1), len(patients) - 1)
    val_mask = train_val[PATIENT_COLUMN].isin(patients[:n_val]).to_numpy()
    return {"train": train_val[~val_mask], "val": train_val[val_mask], "test": table[test_mask]}


def assert_patient_disjoint(splits: dict[str, pd.DataFrame]) -> None:
    """Raise if any patient appears in two splits (e.g. a list file that mixes a patient's images)."""
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(splits[a][PATIENT_COLUMN]) & set(splits[b][PATIENT_COLUMN])
            if shared:
                raise ValueError(
                    f"patients leak between the {a} and {b} splits: {len(shared)} patient(s), e.g. "
                    f"{sorted(shared)[:5]}; every patient must be in one split only"
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
        cache_dir: folder for the on-disk cache of decoded, resized ``uint8`` images (never inside ``root``);
            ``None`` decodes every epoch unless ``cache_in_memory``.
        cache_in_memory: without ``cache_dir``, keep the preprocessed images in RAM (``S*S`` bytes each).
        skip_bad: skip bad rows and files (counted in ``skipped`` and warned) instead of raising.
        batch_size: samples per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory for GPU copies.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        view_positions: list[str] | None = None,
        max_follow_up: int | None = None,
        augmentation: RadiographAugmentation | None = DEFAULT_AUGMENTATION,
        cache_dir: str | None = None,
        cache_in_memory: bool = False,
        skip_bad: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
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
        self.cache_dir = check_cache_dir(cache_dir, root) if cache_dir is not None else None
        self.cache_in_memory = cache_in_memory
        self.skip_bad = skip_bad
        self.skipped: Counter[str] = Counter()
        self.records: dict[str, list[dict]] | None = None
        self.patients: dict[str, set[int]] = {}
        self.official_split = False

    @property
    def task(self) -> TaskSpec:
        return disease_task()

    # ------------------------------------------------------------------ records
    def setup(self, stage: str) -> None:
        if self.records is None:
            self.records = self.build_records()
            self._build_datasets()

    def build_records(self) -> dict[str, list[dict]]:
        """Read and validate everything; return ``{split: records}``. Bad input raises here, before training.

        Raises:
            FileNotFoundError: no label table, a missing image, one list file without the other.
            ValueError: a missing column, a bad row or file, an empty split, a patient in two splits.
        """
        table_path = find_label_table(self.root)
        columns = list(REQUIRED_COLUMNS)
        columns += [VIEW_COLUMN] if self.view_positions else []
        columns += [FOLLOW_UP_COLUMN] if self.max_follow_up is not None else []
        table = read_label_table(table_path, columns)
        labels, bad_rows = findings_matrix(table[FINDINGS_COLUMN], table_path)
        self._bad([reason for _, reason in bad_rows], "bad label rows")
        table = table.assign(_row=np.arange(len(table)))
        keep = ~np.isnan(labels).any(axis=1)
        test_names = self._official_test_names(table_path, set(table[IMAGE_COLUMN]))
        filtered = self._filter(table[keep])
        splits = split_by_patient(filtered, test_names, self.val_fraction, self.test_fraction, self.seed)
        images = index_images(self.root)
        records: dict[str, list[dict]] = {}
        for split, rows in splits.items():
            records[split] = self._records(rows, labels, images, table_path)
            if not records[split]:
                raise ValueError(
                    f"the ChestX-ray14 {split} split is empty (view_positions={self.view_positions}, "
                    f"max_follow_up={self.max_follow_up}, val_fraction={self.val_fraction}; {len(table)} "
                    f"rows in {table_path}, {len(filtered)} after filters); expected at least one image"
                )
        kept = {s: rows[rows[IMAGE_COLUMN].isin({r["id"] for r in records[s]})] for s, rows in splits.items()}
        assert_patient_disjoint(kept)
        self.patients = {s: set(rows[PATIENT_COLUMN]) for s, rows in kept.items()}
        if self.skipped:
            rank_zero_warn(f"ChestX-ray14: skipped bad input (skip_bad=True): {dict(self.skipped)}")
        return records

    def _bad(self, reasons: list[str], kind: str, error: type[Exception] = BadInput) -> None:
        """Raise ``error`` on the first reason, or count them all when ``skip_bad``."""
        if not reasons:
            return
        if not self.skip_bad:
            raise error(reasons[0] + ("" if len(reasons) == 1 else f" (and {len(reasons) - 1} more)"))
        self.skipped[kind] += len(reasons)
        for reason in reasons[:5]:
            log.warning("skipped: %s", reason)

    def _official_test_names(self, table_path: Path, known: set[str]) -> set[str] | None:
        """``test_list.txt`` names (validated against the table and ``train_val_list.txt``), or ``None``."""
        lists = {name: self.root / name for name in (TRAIN_VAL_LIST, TEST_LIST)}
        present = [name for name, path in lists.items() if path.is_file()]
        if not present:
            rank_zero_warn(
                f"{self.root}: no {TRAIN_VAL_LIST} / {TEST_LIST}; using a seeded patient-wise split "
                f"(seed={self.seed}): results are NOT comparable to the official ChestX-ray14 test split"
            )
            return None
        if len(present) == 1:
            missing = next(name for name in lists if name not in present)
            raise FileNotFoundError(f"{self.root / missing}: not found, {present[0]} is; expected both lists")
        names: dict[str, list[str]] = {}
        for name, path in lists.items():
            entries = read_list_file(path)
            absent = [
                f"{path} line {i + 1}: {e!r} is not in {table_path}; expected an image of the label table"
                for i, e in enumerate(entries)
                if e not in known
            ]
            self._bad(absent, "list entries absent from the label table")
            names[name] = [e for e in entries if e in known]
        both = set(names[TRAIN_VAL_LIST]) & set(names[TEST_LIST])
        if both:
            raise ValueError(f"{sorted(both)[:5]} are in both {TRAIN_VAL_LIST} and {TEST_LIST}")
        self.official_split = True
        return set(names[TEST_LIST])

    def _filter(self, table: pd.DataFrame) -> pd.DataFrame:
        if self.view_positions:
            table = table[table[VIEW_COLUMN].astype(str).str.upper().isin(self.view_positions)]
        if self.max_follow_up is not None:
            table = table[pd.to_numeric(table[FOLLOW_UP_COLUMN], errors="coerce") <= self.max_follow_up]
        return table

    def _records(
        self, rows: pd.DataFrame, labels: np.ndarray, images: dict[str, Path], table: Path
    ) -> list[dict]:
        """Records of one split; missing or truncated images raise (or are skipped)."""
        records, missing, broken = [], [], []
        for name, row in zip(rows[IMAGE_COLUMN], rows["_row"]):
            path = images.get(name)
            if path is None:
                missing.append(
                    f"{name}: listed in {table} line {row + 2}, not found under {self.root}/images or "
                    f"{self.root}/images_*/images; check data.root"
                )
                continue
            problem = check_png(path)
            if problem is not None:
                broken.append(f"{path}: {problem}; listed in {table} line {row + 2}; expected a complete PNG")
                continue
            records.append({"image": str(path), "label": labels[row], "id": name})
        self._bad(missing, "missing images", FileNotFoundError)
        self._bad(broken, "unreadable images")
        return records

    # ------------------------------------------------------------------ datasets
    def _build_datasets(self) -> None:
        assert self.records is not None
        pre = radiograph_preprocess(self.image_size)
        cache = self.cache_dir / f"chestxray14_{self.image_size}px" if self.cache_dir is not None else None
        train_post = radiograph_postprocess(self.augmentation, self.image_size)
        eval_post = radiograph_postprocess(None, self.image_size)
        build = {"train": train_post, "val": eval_post, "test": eval_post}
        datasets = {
            split: cached_dataset(records, pre, build[split], cache, self.cache_in_memory, self.num_workers)
            for split, records in self.records.items()
        }
        self.train_dataset, self.val_dataset = datasets["train"], datasets["val"]
        self.test_dataset = datasets["test"]

    # ------------------------------------------------------------------ statistics
    def labels(self, split: str = "train") -> np.ndarray:
        """``float32 [N, 14]`` labels of a split (after ``setup``)."""
        if self.records is None:
            raise RuntimeError("ChestXray14DataModule.labels: call setup() first")
        return np.stack([r["label"] for r in self.records[split]])

    def pos_weight(self) -> torch.Tensor:
        """Per-finding ``#negative / #positive`` over the training split, ``float32 [14]``.

        Pass it to the masked BCE loss, e.g.
        ``functools.partial(MaskedBCEWithLogits, pos_weight=dm.pos_weight().tolist())``.
        """
        return positive_weights(self.labels("train"), list(CHESTXRAY14_FINDINGS))
