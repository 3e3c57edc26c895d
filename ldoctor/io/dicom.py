"""Telling DICOM files apart from other files."""

from __future__ import annotations

from pathlib import Path

from pydicom.misc import is_dicom

DICOM_SUFFIXES = (".dcm", ".dicom")


def looks_like_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` suffix, or (any other name) the Part 10 ``DICM`` marker at byte 128
    (``pydicom.misc.is_dicom``): TCIA's LIDC-IDRI slices have the suffix, some PACS exports have no suffix."""
    path = Path(path)
    return path.suffix.lower() in DICOM_SUFFIXES or (path.is_file() and is_dicom(path))
