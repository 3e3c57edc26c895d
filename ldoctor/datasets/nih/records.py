"""NIH ChestX-ray14 (Wang et al., CVPR 2017) files -> validated, patient-split records for the ``disease`` task.

Expected under ``root`` (as released by the NIH Clinical Center, or as on Kaggle):

- the label table ``Data_Entry_2017_v2020.csv`` or ``Data_Entry_2017.csv``, plain or ``.gz``, with the
  columns ``Image Index``, ``Finding Labels`` (findings joined by ``|``, or ``No Finding``), ``Patient ID``,
  ``Follow-up #``, ``View Position`` (``PA``/``AP``);
- the PNGs in ``images/`` or in the release's nested ``images_001/images/`` ... ``images_012/images/``;
- optionally ``train_val_list.txt`` and ``test_list.txt`` (the official patient-wise split, one file name a
  line). Validation is carved out of ``train_val`` by patient; label-table rows in neither list are left out of
  every split (with a warning giving their count). Without the list files a seeded patient-wise
  train/val/test split is drawn (:mod:`ldoctor.evaluation.splits`), with a warning that results are not
  comparable to the official split.

:func:`read_nih_folder` reads and validates one folder (bad input fails here, naming the file and line);
:func:`split_nih` splits it by patient: the official lists, a seeded split, patient-grouped K folds, or every image
of the folder in train / validation with a separate test folder (:func:`check_disjoint_folders` refuses a patient
in both). :func:`read_nih` is the first two in one call.

Labels are the 14 findings in :data:`CHESTXRAY14_FINDINGS` order; ``No Finding`` is the all-zero row. No patient
is ever in two splits (checked when the splits are built).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_warn

from ldoctor.errors import BadInput, BadInputLog
from ldoctor.evaluation.splits import check_patient_disjoint, patient_folds, split_patients
from ldoctor.io.radiograph import check_png
from ldoctor.io.tables import read_csv, read_text_lines
from ldoctor.privacy import redact
from ldoctor.tasks import TaskSpec

#: The 14 ChestX-ray14 findings in the fixed order of the ``disease`` label columns
#: (the order of Wang et al., CVPR 2017, Table 1 and of the NIH release's README).
#: "No Finding" is not a class: it is the all-zero label row.
CHESTXRAY14_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
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
#: The shipped real NIH folder: 837 ChestX-ray14 PNGs at 64 x 64 of 203 patients and their table rows, no list
#: files (``ldoctor/demo_data/nih-cxr14-64/README.md``).
NIH_DEMO = str(Path(__file__).resolve().parents[2] / "demo_data/nih-cxr14-64")


def disease_task(findings: Sequence[str] = CHESTXRAY14_FINDINGS) -> TaskSpec:
    """``disease``: chest X-ray findings, multilabel, columns in :data:`CHESTXRAY14_FINDINGS` order."""
    return TaskSpec(name="disease", kind="multilabel", num_outputs=len(findings), class_names=list(findings))


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
        BadInput: missing columns, empty table, duplicate image names, non-integer patient ids; a damaged ``.gz``,
            bytes that are not UTF-8, an empty file or a malformed CSV (:func:`~ldoctor.io.tables.read_csv`).
    """
    path = Path(path)
    table = read_csv(path, f"the NIH ChestX-ray14 label table (a CSV with the columns {list(columns)})",
                     dtype={IMAGE_COLUMN: str, FINDINGS_COLUMN: str})
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise BadInput(
            f"{path}: missing column(s) {missing}; expected the NIH Data_Entry_2017 columns {list(columns)}, "
            f"found {list(table.columns)}"
        )
    if table.empty:
        raise BadInput(f"{path}: the label table has no rows")
    duplicated = table[IMAGE_COLUMN].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise BadInput(f"{path} line {row + 2}: image {table[IMAGE_COLUMN][row]!r} is listed twice")
    patients = pd.to_numeric(table[PATIENT_COLUMN], errors="coerce")
    if patients.isna().any():
        row = int(np.flatnonzero(patients.isna())[0])
        raise BadInput(
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
    """File names of an NIH split list (one per line, UTF-8; blank lines ignored)."""
    return read_text_lines(path, "an NIH split list (one image file name a line)")


def official_lists(root: Path, table_path: Path, known: set[str],
                   bad: BadInputLog) -> tuple[set[str], set[str]] | None:
    """The names of ``train_val_list.txt`` and ``test_list.txt`` (validated against the table and each other), or
    ``None`` without list files.

    Raises:
        FileNotFoundError: one list without the other. ValueError: an image in both lists; list entries absent
            from the label table (unless ``bad`` skips them).
    """
    lists = {name: root / name for name in (TRAIN_VAL_LIST, TEST_LIST)}
    present = [name for name, path in lists.items() if path.is_file()]
    if not present:
        return None
    if len(present) == 1:
        missing = next(name for name in lists if name not in present)
        raise FileNotFoundError(f"{root / missing}: not found, {present[0]} is; expected both lists")
    names: dict[str, list[str]] = {}
    for name, path in lists.items():
        entries = read_list_file(path)
        absent = [f"{path} line {i + 1}: {e!r} is not in {table_path}; expected an image of the label table"
                  for i, e in enumerate(entries) if e not in known]
        bad.report_all("list entries absent from the label table", absent)
        names[name] = [e for e in entries if e in known]
    both = set(names[TRAIN_VAL_LIST]) & set(names[TEST_LIST])
    if both:
        raise BadInput(f"{sorted(both)[:5]} are in both {TRAIN_VAL_LIST} and {TEST_LIST}")
    return set(names[TRAIN_VAL_LIST]), set(names[TEST_LIST])


def official_test_names(root: Path, table_path: Path, known: set[str], bad: BadInputLog) -> set[str] | None:
    """``test_list.txt`` names (validated against the table and ``train_val_list.txt``), or ``None`` without lists
    (see :func:`official_lists`)."""
    lists = official_lists(root, table_path, known, bad)
    return None if lists is None else lists[1]


def listed_rows(table: pd.DataFrame, lists: tuple[set[str], set[str]], root: Path, table_path: Path) -> np.ndarray:
    """Mask of the rows named by a list file. The official split assigns every image to one list: a row in neither
    is used by no split and left out here, with a warning giving how many and an example (never trained on)."""
    listed = table[IMAGE_COLUMN].isin(lists[0] | lists[1]).to_numpy()
    if not listed.all():
        unlisted = np.flatnonzero(~listed)
        rank_zero_warn(redact(f"{table_path}: {len(unlisted)} of {len(table)} rows are in neither "
                              f"{root / TRAIN_VAL_LIST} nor {root / TEST_LIST} (e.g. "
                              f"{table[IMAGE_COLUMN].iat[unlisted[0]]}, line {unlisted[0] + 2}); they are left out of "
                              "every split (the official lists decide the split)"))
    return listed


def patient_splits(
    table: pd.DataFrame,
    test_names: set[str] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    folds: int | None = None,
    fold: int = 0,
) -> dict[str, pd.DataFrame]:
    """Patient-wise train/val/test rows of the (filtered) label table.

    Args:
        table: rows to split.
        test_names: official test images (``test_list.txt``); ``None`` draws a seeded test split of
            ``test_fraction`` of the patients. Validation takes ``val_fraction`` of the other patients.
        val_fraction: share of (train_val) patients in validation.
        test_fraction: share of patients in test when ``test_names`` and ``folds`` are ``None`` (0: no test split).
        seed: seed of the patient shuffle.
        folds: patient-grouped K-fold cross-validation (:func:`~ldoctor.evaluation.splits.patient_folds`): the test
            split is fold ``fold`` of ``folds`` over every patient, validation ``val_fraction`` of the others
            (``test_names`` and ``test_fraction`` unused).
        fold: the test fold (0-based) when ``folds`` is set.
    """
    patients = sorted(set(table[PATIENT_COLUMN].tolist()))
    if folds is not None:
        by_patient = patient_folds(patients, folds, fold, val_fraction, seed)
        return {name: table[table[PATIENT_COLUMN].isin(set(members))] for name, members in by_patient.items()}
    if test_names is None:
        fractions = {"train": (1 - test_fraction) * (1 - val_fraction), "val": (1 - test_fraction) * val_fraction,
                     "test": test_fraction}
        by_patient = split_patients(patients, fractions, seed,
                                    require_nonempty=False)  # split_nih names the filters that emptied a split
        return {name: table[table[PATIENT_COLUMN].isin(set(members))] for name, members in by_patient.items()}
    test_mask = table[IMAGE_COLUMN].isin(test_names).to_numpy()
    train_val = table[~test_mask]
    by_patient = split_patients(sorted(set(train_val[PATIENT_COLUMN].tolist())),
                                {"train": 1 - val_fraction, "val": val_fraction}, seed, require_nonempty=False)
    val = train_val[PATIENT_COLUMN].isin(set(by_patient["val"])).to_numpy()
    return {"train": train_val[~val], "val": train_val[val], "test": table[test_mask]}


def filter_rows(table: pd.DataFrame, view_positions: Sequence[str] | None, max_follow_up: int | None) -> pd.DataFrame:
    """Rows with a ``View Position`` in ``view_positions`` (all when ``None``) and ``Follow-up #`` <= ``max_follow_up``."""
    if view_positions:
        table = table[table[VIEW_COLUMN].astype(str).str.upper().isin(view_positions)]
    if max_follow_up is not None:
        table = table[pd.to_numeric(table[FOLLOW_UP_COLUMN], errors="coerce") <= max_follow_up]
    return table


def image_records(rows: pd.DataFrame, labels: np.ndarray, images: dict[str, Path], root: Path, table: Path,
                  bad: BadInputLog) -> list[dict]:
    """Records ``{"image": path, "label": float32 [14], "id": file name}`` of the given rows, in their order; missing
    or truncated images raise (or are skipped by ``bad``)."""
    records, missing, broken = [], [], []
    for name, row in zip(rows[IMAGE_COLUMN], rows["_row"]):
        path = images.get(name)
        if path is None:
            missing.append(f"{name}: listed in {table} line {row + 2}, not found under {root}/images or "
                           f"{root}/images_*/images; check data.root")
            continue
        problem = check_png(path)
        if problem is not None:
            broken.append(f"{path}: {problem}; listed in {table} line {row + 2}; expected a complete PNG")
            continue
        records.append({"image": str(path), "label": labels[row], "id": name})
    bad.report_all("missing images", missing, FileNotFoundError)
    bad.report_all("unreadable images", broken)
    return records


@dataclass
class NIHFolder:
    """One NIH folder read and validated (:func:`read_nih_folder`), not yet split.

    Attributes:
        root: the folder.
        table_path: its label table.
        rows: the rows kept after the filters and without bad labels, table order (``Image Index``,
            ``Patient ID``, ``_row`` = row of the table file, ...): what the patient splitter sees.
        records: ``{file name: record}`` of the rows whose image is usable, table order; a record is
            ``{"image": path, "label": float32 [14], "id": file name}``.
        test_names: the names of ``test_list.txt`` (validated); ``None`` without list files or when not read.
        rows_read: rows of the label table before filtering.
        filters: the filters applied, for messages.
    """

    root: Path
    table_path: Path
    rows: pd.DataFrame
    records: dict[str, dict]
    test_names: set[str] | None = None
    rows_read: int = 0
    filters: str = ""

    @property
    def patients(self) -> set[int]:
        """Patient ids of :attr:`rows`."""
        return set(self.rows[PATIENT_COLUMN].tolist())

    @property
    def patient_of(self) -> dict[str, int]:
        """File name -> patient id, over :attr:`rows`."""
        return dict(zip(self.rows[IMAGE_COLUMN], self.rows[PATIENT_COLUMN].tolist()))

    def split_records(self, rows: pd.DataFrame) -> list[dict]:
        """The usable records of ``rows`` (a selection of :attr:`rows`), in their order."""
        return [self.records[name] for name in rows[IMAGE_COLUMN] if name in self.records]


def read_nih_folder(
    root: str | Path,
    bad: BadInputLog,
    view_positions: Sequence[str] | None = None,
    max_follow_up: int | None = None,
    lists: bool = True,
) -> NIHFolder:
    """Read and validate one NIH folder: its label table, its images and (with ``lists``) the official split lists.

    Args:
        root: the folder (label table, ``images/`` or ``images_*/images/``, optional list files).
        bad: raises at the first bad input, or counts it (``skip_bad``).
        view_positions: keep only these ``View Position`` values (upper case); ``None`` keeps all.
        max_follow_up: keep only rows with ``Follow-up #`` <= this.
        lists: read ``train_val_list.txt`` / ``test_list.txt`` when present (rows in neither list are then left
            out, with a warning); ``False`` ignores them (every image of the folder is then split by patient, or is a
            test folder of its own).

    Raises:
        FileNotFoundError: no label table, a missing image, one list file without the other.
        BadInput: a missing column, a bad row or file, an image in both list files.
    """
    root = Path(root)
    table_path = find_label_table(root)
    columns = [*REQUIRED_COLUMNS, *([VIEW_COLUMN] if view_positions else []),
               *([FOLLOW_UP_COLUMN] if max_follow_up is not None else [])]
    table = read_label_table(table_path, columns)
    labels, bad_rows = findings_matrix(table[FINDINGS_COLUMN], table_path)
    bad.report_all("bad label rows", [reason for _, reason in bad_rows])
    table = table.assign(_row=np.arange(len(table)))
    official = official_lists(root, table_path, set(table[IMAGE_COLUMN]), bad) if lists else None
    keep = ~np.isnan(labels).any(axis=1)
    if official is not None:
        keep &= listed_rows(table, official, root, table_path)
    test_names = official[1] if official is not None else None
    filtered = filter_rows(table[keep], view_positions, max_follow_up)
    records = image_records(filtered, labels, index_images(root), root, table_path, bad)
    return NIHFolder(root, table_path, filtered, {r["id"]: r for r in records}, test_names, len(table),
                     f"view_positions={list(view_positions) if view_positions else None}, max_follow_up={max_follow_up}")


def check_disjoint_folders(train: NIHFolder, test: NIHFolder) -> None:
    """Refuse a test folder that shares a patient with the training folder.

    Raises:
        BadInput: naming both tables, how many patients they share and up to five of them.
    """
    shared = sorted(train.patients & test.patients)
    if shared:
        raise BadInput(
            f"{len(shared)} patients are in both {train.table_path} and {test.table_path} (e.g. {shared[:5]}); "
            "the test folder must hold other patients than the training folder"
        )


@dataclass
class NIHSplits:
    """What :func:`split_nih` (and :func:`read_nih`) return.

    Attributes:
        records: ``{"train" | "val" | "test": records}``.
        patients: the patient ids of each split.
        official: the test split is the official ``test_list.txt``.
        protocol: how the test split was made: ``"official"``, ``"seeded"``, ``"fold k of K"`` or ``"test root"``.
    """

    records: dict[str, list[dict]]
    patients: dict[str, set[int]] = field(default_factory=dict)
    official: bool = False
    protocol: str = ""


def split_nih(
    folder: NIHFolder,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    folds: int | None = None,
    fold: int = 0,
    test: NIHFolder | None = None,
) -> NIHSplits:
    """Split a read folder by patient into train / val / test records.

    Args:
        folder: the folder to split (:func:`read_nih_folder`).
        val_fraction: share of the non-test patients in validation.
        test_fraction: share of patients in a seeded test split (without lists, folds or ``test``).
        seed: seed of the patient shuffles.
        folds: patient-grouped K folds over every patient of ``folder`` (its list files unused); test = fold ``fold``.
        fold: the test fold when ``folds`` is set.
        test: a separate test folder (:func:`check_disjoint_folders` first): every image of ``folder`` trains or
            validates and the test split is every image of ``test``.

    Raises:
        BadInput: an empty split (naming the filters and row counts). ValueError: a patient in two splits.
    """
    if test is not None:
        rows = patient_splits(folder.rows, None, val_fraction, 0.0, seed)
        rows["test"], protocol = test.rows, "test root"
    else:
        rows = patient_splits(folder.rows, folder.test_names, val_fraction, test_fraction, seed, folds, fold)
        protocol = (f"fold {fold} of {folds}" if folds is not None else
                    "seeded" if folder.test_names is None else "official")
    if protocol == "seeded":
        rank_zero_warn(f"{folder.root}: no {TRAIN_VAL_LIST} / {TEST_LIST}; using a seeded patient-wise split "
                       f"(seed={seed}): results are NOT comparable to the official ChestX-ray14 test split")
    records = {split: (test if split == "test" and test is not None else folder).split_records(r)
               for split, r in rows.items()}
    for split, kept in records.items():
        if not kept:
            source = test if split == "test" and test is not None else folder
            raise BadInput(f"the ChestX-ray14 {split} split is empty ({source.filters}, val_fraction={val_fraction}; "
                           f"{source.rows_read} rows in {source.table_path}, {len(source.rows)} after filters); "
                           "expected at least one image")
    patients = {split: set(r[r[IMAGE_COLUMN].isin({x["id"] for x in records[split]})][PATIENT_COLUMN].tolist())
                for split, r in rows.items()}
    check_patient_disjoint(patients)
    return NIHSplits(records, patients, protocol == "official", protocol)


def read_nih(
    root: str | Path,
    bad: BadInputLog,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    view_positions: Sequence[str] | None = None,
    max_follow_up: int | None = None,
) -> NIHSplits:
    """Read and validate an NIH folder into patient-wise split records (official lists when present, else a seeded
    split). Bad input raises here, before training.

    Raises:
        FileNotFoundError: no label table, a missing image, one list file without the other.
        ValueError: a missing column, a bad row or file, an empty split, a patient in two splits.
    """
    folder = read_nih_folder(root, bad, view_positions, max_follow_up)
    splits = split_nih(folder, val_fraction, test_fraction, seed)
    bad.summary()
    return splits
