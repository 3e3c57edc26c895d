"""The ``lidc-vois`` layout: real LIDC-IDRI nodule volumes of interest in HU, one NIfTI per nodule.

Files under ``root``:

- ``vois.csv``: one row per nodule: ``image`` and ``mask`` (paths relative to ``root``), ``key`` (unique, e.g.
  ``LIDC-IDRI-0001_R_1``), ``patient_id``, ``seriesuid``, ``coordX, coordY, coordZ`` (the nodule centre in LUNA16
  world coordinates: DICOM patient LPS, mm), ``diameter_mm``, ``Malignancy_value`` (**the max-voted** rating
  1-5: this layout has no mean rating) and the other ratings as ``<Name>_value`` columns (also a benign / malignant
  ``Diagnosis`` by the source's own rule, not pathology, which is not read);
- ``image/<key>.nii.gz``: int16 HU at the scan's native spacing (about 44 x 44 x 2-62 voxels around the nodule);
- ``nodule_mask/<key>.nii.gz``: the nodule mask on the same grid.

NIfTI affines are RAS; :func:`ldoctor.io.ct.read_nifti` turns them into LPS, the frame of the centres (checked on
the real files: the centre lies within 0.1 mm, median, of the mask's centroid).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ldoctor.datasets.lidc.source import NoduleSource
from ldoctor.errors import BadInput, BadInputLog
from ldoctor.io.ct import SeriesHeader, read_nifti, read_nifti_header
from ldoctor.io.tables import read_csv, read_csv_columns

VOIS_CSV = "vois.csv"
#: Record ``ratings`` name -> ``vois.csv`` column (lower case, as :func:`read_csv_columns` matches them).
VOI_RATINGS = {"subtlety": "subtlety_value", "internalStructure": "internalstructure_value",
               "calcification": "calcification_value", "sphericity": "sphericity_value", "margin": "margin_value",
               "lobulation": "lobulation_value", "spiculation": "spiculation_value", "texture": "texture_value"}
VOI_COLUMNS = ("image", "mask", "key", "patient_id", "seriesuid", "coordx", "coordy", "coordz", "diameter_mm",
               "malignancy_value", *VOI_RATINGS.values())


def _number(row: pd.Series, column: str, where: str) -> float:
    try:
        value = float(row[column])
    except ValueError as err:
        raise BadInput(f"{where}: {column}={row[column]!r} is not a number") from err
    if not math.isfinite(value):
        raise BadInput(f"{where}: {column}={row[column]!r} is not finite")
    return value


def check_patient(row: pd.Series, where: str) -> str:
    """The row's patient id; BadInput when it is empty or the ``key`` names another patient (``<patient>_...``)."""
    patient = row["patient_id"]
    if not patient:
        raise BadInput(f"{where}: no patient_id; the patient-wise split needs it")
    if not row["key"].startswith(f"{patient}_"):
        raise BadInput(f"{where}: key {row['key']!r} does not belong to patient_id {patient!r} (expected "
                       f"'{patient}_...'): unknown patient")
    return patient


def _header(path: Path, where: str) -> SeriesHeader:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: listed in {where}, not found; check root")
    try:
        return read_nifti_header(path)
    except Exception as err:  # nibabel raises several types for broken files
        raise BadInput(f"{path}: listed in {where}, not a readable NIfTI file ({type(err).__name__}: {err})") from err


def check_volume(image: Path, mask: Path, center_mm: Sequence[float], where: str) -> None:
    """Check one VOI's files: both exist and read, the mask lies on the image's grid, the centre lies inside the
    volume and every voxel is finite (the voxels are read: about 10 ms per VOI).

    Raises:
        FileNotFoundError: a missing file. BadInput: an unreadable file, a mask of another shape or affine, a
            centre outside the volume, NaN or inf voxels (each naming the file).
    """
    header, mask_header = _header(image, where), _header(mask, where)
    if mask_header.shape != header.shape or not np.allclose(mask_header.affine, header.affine, atol=1e-3):
        raise BadInput(f"{mask}: mask of shape {list(mask_header.shape)} does not lie on the grid of {image} "
                       f"(shape {list(header.shape)}); expected the same shape and affine")
    if not header.contains(np.asarray(center_mm, dtype=float)):
        voxel = header.world_to_voxel(np.asarray(center_mm, dtype=float)[None])[0]
        raise BadInput(f"{image}: centre {np.round(center_mm, 2).tolist()} mm of {where} lies outside the volume "
                       f"(voxel {voxel.round(1).tolist()}, shape {list(header.shape)})")
    hu = read_nifti(image).hu
    if not np.isfinite(hu).all():
        raise BadInput(f"{image}: {int((~np.isfinite(hu)).sum())} NaN or inf voxels; expected HU everywhere")


class NoduleVolumes(NoduleSource):
    """Real LIDC-IDRI nodule volumes in HU of the ``lidc-vois`` layout (module docstring), one record per row.

    Records (:mod:`~ldoctor.datasets.lidc.source`): ``id`` = ``key`` (``vois.csv`` order), ``patient_id``,
    ``volume`` (the image NIfTI path, read by the CT path in HU, LPS), ``center_mm`` ``[coordX, coordY, coordZ]``
    (LPS mm), ``consensus`` = ``Malignancy_value`` (the max-voted reader rating, 1-5: no mean rating exists in this
    layout, so a consensus of 3 is the mode, not a mean), ``label`` ``[1.0]`` / ``[0.0]`` / ``[nan]``,
    ``diameter_mm``; also ``mask`` (the mask NIfTI path; a possible training target, never an input), ``ratings``
    (the other max-voted ratings; for analysis only) and ``series_uid``.

    Everything is checked in :meth:`read`, before training: each row's patient, numbers and duplicate keys, the
    two files (present, readable, same grid), the centre inside the volume and the voxels finite (every volume is
    read once: about 10 s for the 760 VOIs of the full set).

    Args:
        root: the ``lidc-vois`` folder.
        positive_above: ``Malignancy_value`` above this is malignant.
        negative_below: below this is benign; in between the label is NaN.
    """

    def read(self, bad: BadInputLog) -> list[dict]:
        """Validated records in ``vois.csv`` order.

        Raises:
            FileNotFoundError: no ``vois.csv``; a missing image or mask (unless ``bad`` skips the row, kind
                ``"nodule"``).
            BadInput: a missing column; unless ``bad`` skips the row: an empty or unknown patient id, a repeated
                key, a value that is not a number, a malignancy outside 1-5, and :func:`check_volume`'s problems.
        """
        path = self.root / VOIS_CSV
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; the lidc-vois layout needs {VOIS_CSV} with image/ and "
                                    "nodule_mask/ beside it; check root")
        table = read_csv_columns(path, VOI_COLUMNS, f"the lidc-vois table {VOIS_CSV}")
        records, seen = [], {}
        for _, row in table.iterrows():
            where = f"{path} line {row['line']} ({row['key'] or 'no key'})"
            try:
                if row["key"] in seen:
                    raise BadInput(f"{where}: key {row['key']!r} repeated (first on line {seen[row['key']]})")
                seen[row["key"]] = row["line"]
                records.append(self._record(row, where))
            except (BadInput, FileNotFoundError) as err:
                bad.report("nodule", str(err), type(err))
        bad.summary()
        if not records:
            raise BadInput(f"{path}: no readable nodule volume (skipped: {dict(bad.counts)})")
        return records

    def _record(self, row: pd.Series, where: str) -> dict:
        patient = check_patient(row, where)
        center = [_number(row, column, where) for column in ("coordx", "coordy", "coordz")]
        consensus = _number(row, "malignancy_value", where)
        if consensus not in (1, 2, 3, 4, 5):
            raise BadInput(f"{where}: Malignancy_value={row['malignancy_value']!r}; expected a rating 1-5")
        image, mask = self.root / row["image"], self.root / row["mask"]
        check_volume(image, mask, center, where)
        return {
            "id": row["key"], "patient_id": patient, "volume": str(image), "center_mm": center,
            "consensus": consensus, "label": [self.label(consensus)],
            "diameter_mm": _number(row, "diameter_mm", where), "mask": str(mask),
            "ratings": {name: _number(row, column, where) for name, column in VOI_RATINGS.items()},
            "series_uid": row["seriesuid"],
        }


def write_voi_subset(source: str | Path, destination: str | Path, keys: Sequence[str]) -> Path:
    """Copy some rows of a ``lidc-vois`` folder (every column, original order) and their two files into a new
    folder of the same layout.

    Raises:
        FileExistsError: ``destination`` exists. BadInput: a key not in ``vois.csv``.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination}: already exists; remove it first")
    table = read_csv(source / VOIS_CSV, f"the lidc-vois table {VOIS_CSV}", dtype=str, keep_default_na=False)
    missing = sorted(set(keys) - set(table["key"]))
    if missing:
        raise BadInput(f"{source / VOIS_CSV}: keys {missing[:5]} not listed")
    kept = table[table["key"].isin(set(keys))]
    for relative in [*kept["image"], *kept["mask"]]:
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, destination / relative)
    kept.to_csv(destination / VOIS_CSV, index=False)
    return destination
