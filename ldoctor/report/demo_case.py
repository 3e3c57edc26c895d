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


def write_demo_case(datamodule: Any, folder: str | Path) -> Path:
    """Write the composite validation case of the demo's ``MultiTaskDataModule`` into ``folder`` (created).

    Returns:
        the case folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nodule = datamodule.member("tumor").splits["val"][0]
    volume = nodule["volume"]
    nib.save(nib.Nifti1Image(volume.hu.astype(np.float32), RAS_TO_LPS @ volume.affine), folder / "ct.nii.gz")
    with open(folder / "candidates.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["coordX", "coordY", "coordZ", "diameter_mm"])
        writer.writerow([*(f"{v:.2f}" for v in nodule["center_mm"]), f"{nodule['diameter_mm']:.1f}"])
    radiograph = datamodule.member("disease").records["val"][0]["image"]
    shutil.copyfile(radiograph, folder / "radiograph.png")
    admissions = datamodule.member("drug").splits["val"]
    by_patient: dict[str, list[dict]] = {}
    for record in admissions:
        by_patient.setdefault(record["subject_id"], []).append(record)
    history = next((a for a in by_patient.values() if len(a) >= 2), next(iter(by_patient.values())))
    (folder / "history.json").write_text(json.dumps({"admissions": [
        {"diagnoses": a["diagnoses"], "procedures": a["procedures"], "drugs": a["drugs"]} for a in history]}, indent=1))
    return folder
