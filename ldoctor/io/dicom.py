"""Telling DICOM files apart from other files, and cheap checks of a DICOM's pixel data from its header alone."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.misc import is_dicom

DICOM_SUFFIXES = (".dcm", ".dicom")


def looks_like_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` suffix, or (any other name) the Part 10 ``DICM`` marker at byte 128
    (``pydicom.misc.is_dicom``): TCIA's LIDC-IDRI slices have the suffix, some PACS exports have no suffix."""
    path = Path(path)
    return path.suffix.lower() in DICOM_SUFFIXES or (path.is_file() and is_dicom(path))


def read_header(path: str | Path) -> tuple[Dataset, int]:
    """A DICOM file's header, read without its pixel data, and the byte offset at which the pixel data element starts
    (pydicom stops reading there; the file size when there is none).

    Raises:
        whatever ``pydicom.dcmread`` raises for a file it cannot parse.
    """
    with Path(path).open("rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        return ds, f.tell()


def decoder_problem(ds: Dataset) -> str | None:
    """What stops the installed pydicom plugins from decoding ``ds``'s pixel data, or ``None`` (uncompressed, or a
    decoder is available)."""
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not syntax.is_compressed:
        return None
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"no pixel data decoder exists for transfer syntax {syntax.name} ({syntax})"
    if decoder.is_available:
        return None
    missing = "; ".join(decoder.missing_dependencies) or "no plugin"
    return (f"pixel data is compressed as {syntax.name} ({syntax}) and no decoder is installed ({missing}); install "
            "one of them (e.g. `pip install pylibjpeg pylibjpeg-libjpeg`) or decompress the file (e.g. `gdcmconv --raw`)")


def pixel_data_problem(ds: Dataset, offset: int, size: int) -> str | None:
    """A truncated file: uncompressed pixel data shorter than ``Rows x Columns x SamplesPerPixel x BitsAllocated / 8``
    bytes per frame, from the header alone (:func:`read_header`). ``None`` when complete, compressed (its length is
    only known once decoded) or deflated.

    Args:
        ds: the header.
        offset: where the pixel data element starts (:func:`read_header`).
        size: the file's size in bytes.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or syntax.is_compressed or syntax.is_deflated or "Rows" not in ds or "Columns" not in ds:
        return None
    element_header = 8 if syntax.is_implicit_VR else 12  # tag, (VR, reserved,) length
    if size - offset < element_header:
        return "no pixel data"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 16) or 16)
    needed = (int(ds.Rows) * int(ds.Columns) * samples * bits * frames + 7) // 8
    present = size - offset - element_header
    if present >= needed:
        return None
    return (f"pixel data is {present} bytes, {int(ds.Rows)} x {int(ds.Columns)} pixels x {samples} sample(s) x {bits} "
            f"bits x {frames} frame(s) need {needed} bytes (truncated file)")
