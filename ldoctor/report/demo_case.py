"""A case folder for ``make demo``, built from the trained run's validation patients.

No shipped patient has all three inputs, so the demo case is a composite of three validation patients: the first
validation nodule's CT (its slice stack in pseudo-HU, written as ``ct.nii.gz``, with ``candidates.csv`` giving its
centre and the readers' mean diameter), the first validation radiograph (``radiograph.png``) and the admissions of the
first validation patient with at least two (``history.json``). Nothing of it was trained on.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ldoctor.io.ct import RAS_TO_LPS


def write_nodule_ct(folder: Path, nodule: dict) -> None:
    """A nodule record's CT (``"volume"``, a :class:`~ldoctor.io.ct.CTVolume`) as ``ct.nii.gz`` and its centre (and
    ``"diameter_mm"`` when the record has one) as ``candidates.csv``."""
    volume = nodule["volume"]
    nib.save(nib.Nifti1Image(volume.hu.astype(np.float32), RAS_TO_LPS @ volume.affine), folder / "ct.nii.gz")
    diameter = nodule.get("diameter_mm")
    with open(folder / "candidates.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["coordX", "coordY", "coordZ", *(["diameter_mm"] if diameter is not None else [])])
        writer.writerow([*(f"{v:.2f}" for v in nodule["center_mm"]), *([f"{diameter:.1f}"] if diameter is not None
                                                                      else [])])


def write_history(folder: Path, admissions: list[dict]) -> None:
    """``history.json`` of the first patient of ``admissions`` (MIMIC records) with at least two (else the first)."""
    by_patient: dict[str, list[dict]] = {}
    for record in admissions:
        by_patient.setdefault(record["subject_id"], []).append(record)
    history = next((a for a in by_patient.values() if len(a) >= 2), next(iter(by_patient.values())))
    (folder / "history.json").write_text(json.dumps({"admissions": [
        {"diagnoses": a["diagnoses"], "procedures": a["procedures"], "drugs": a["drugs"]} for a in history]}, indent=1))


def write_demo_case(datamodule: Any, folder: str | Path) -> Path:
    """Write the composite validation case of the demo's ``MultiTaskDataModule`` into ``folder`` (created).

    Returns:
        the case folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_nodule_ct(folder, datamodule.member("tumor").splits["val"][0])
    shutil.copyfile(datamodule.member("disease").records["val"][0]["image"], folder / "radiograph.png")
    write_history(folder, datamodule.member("drug").splits["val"])
    return folder
