"""Write a synthetic data set in the NIH ChestX-ray14 file format (tests, demos, benchmark smoke runs).

The output is what a user unpacks from the NIH release: 8-bit grey PNGs in ``images/`` (or the nested
``images_001/images/`` layout), ``Data_Entry_2017_v2020.csv`` (or ``.csv.gz``) with the release's 11
columns, and the patient-wise ``train_val_list.txt`` / ``test_list.txt``.

The images carry a learnable signal: a chest-like background (two dark lung fields, a brighter
mediastinum) plus, for finding ``k`` present, a bright disc in cell ``k`` of a 4x4 grid over the image.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ldoctor.tasks import CHESTXRAY14_FINDINGS

#: The column names of ``Data_Entry_2017_v2020.csv`` as released (11 columns).
NIH_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
)


@dataclass
class NIHDataset:
    """What :func:`write_nih_dataset` wrote.

    Attributes:
        root: the data folder (pass it as ``data.root``).
        table: the label table as written.
        labels: ``float32 [rows, 14]`` 0/1 findings (``CHESTXRAY14_FINDINGS`` order), one row per table row.
        image_paths: PNG path of each row.
        train_val: names in ``train_val_list.txt`` (empty without list files).
        test: names in ``test_list.txt``.
    """

    root: Path
    table: pd.DataFrame
    labels: np.ndarray
    image_paths: list[Path]
    train_val: list[str]
    test: list[str]


def finding_image(findings: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic radiograph: ``uint8 [size, size]``; finding ``k`` = bright disc in grid cell ``k``."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 0.75 - 0.35 * (((xx - 0.3) / 0.17) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
    image = image - 0.35 * (((xx - 0.7) / 0.17) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
    for k in np.flatnonzero(findings):
        cy, cx = (k // 4 + 0.5) / 4, (k % 4 + 0.5) / 4
        image = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < (0.07) ** 2, 0.98, image)
    image = image + rng.normal(0.0, 0.04, image.shape)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def write_nih_dataset(
    root: str | Path,
    num_patients: int = 40,
    max_images_per_patient: int = 3,
    image_size: int = 64,
    prevalence: float = 0.15,
    test_fraction: float = 0.25,
    seed: int = 0,
    nested: bool = False,
    gzip_table: bool = False,
    list_files: bool = True,
) -> NIHDataset:
    """Write a synthetic NIH-format data set.

    Args:
        root: output folder (created).
        num_patients: patients; each gets 1..``max_images_per_patient`` studies (``Follow-up #`` 0, 1, ...).
        max_images_per_patient: most studies per patient.
        image_size: PNG side, pixels.
        prevalence: probability of each finding per study.
        test_fraction: share of patients in ``test_list.txt``.
        seed: random seed (labels, images, split).
        nested: write ``images_001/images/`` .. (the release layout, 2 folders) instead of ``images/``.
        gzip_table: write ``Data_Entry_2017_v2020.csv.gz``.
        list_files: write ``train_val_list.txt`` and ``test_list.txt``.

    Returns:
        The written data set, see :class:`NIHDataset`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows, labels, paths = [], [], []
    folders = [root / f"images_00{i}" / "images" for i in (1, 2)] if nested else [root / "images"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for patient in range(1, num_patients + 1):
        for follow_up in range(int(rng.integers(1, max_images_per_patient + 1))):
            name = f"{patient:08d}_{follow_up:03d}.png"
            findings = (rng.random(len(CHESTXRAY14_FINDINGS)) < prevalence).astype(np.float32)
            path = folders[(patient - 1) * len(folders) // num_patients] / name
            Image.fromarray(finding_image(findings, image_size, rng), mode="L").save(path)
            text = "|".join(f for f, y in zip(CHESTXRAY14_FINDINGS, findings) if y) or "No Finding"
            view = "PA" if rng.random() < 0.6 else "AP"
            rows.append([name, text, follow_up, patient, int(rng.integers(20, 90)), "MF"[patient % 2], view,
                         2500, 2048, 0.143, 0.143])
            labels.append(findings)
            paths.append(path)
    table = pd.DataFrame(rows, columns=list(NIH_COLUMNS))
    csv = root / ("Data_Entry_2017_v2020.csv.gz" if gzip_table else "Data_Entry_2017_v2020.csv")
    if gzip_table:
        with gzip.open(csv, "wt", newline="") as f:
            table.to_csv(f, index=False)
    else:
        table.to_csv(csv, index=False)
    train_val, test = _write_lists(root, table, test_fraction, rng) if list_files else ([], [])
    return NIHDataset(root, table, np.stack(labels), paths, train_val, test)


def _write_lists(
    root: Path, table: pd.DataFrame, test_fraction: float, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Patient-wise official-style lists: whole patients go to ``test_list.txt``."""
    patients = rng.permutation(table["Patient ID"].unique())
    test_patients = set(patients[: max(1, int(round(test_fraction * len(patients))))].tolist())
    is_test = table["Patient ID"].isin(test_patients)
    test = table.loc[is_test, "Image Index"].tolist()
    train_val = table.loc[~is_test, "Image Index"].tolist()
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return train_val, test
