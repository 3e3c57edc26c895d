"""Radiographs from PNG (8/16-bit grey, RGB) or single-frame DICOM (CR, DX; MONOCHROME1/2) as grey in ``[0, 1]``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from ldoctor.errors import BadInput
from ldoctor.io.dicom import looks_like_dicom

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def check_png(path: str | Path) -> str | None:
    """Cheap integrity check of a PNG without decoding it: the signature and the ``IEND`` trailer.

    A download cut short loses the trailer, so this catches truncated files in microseconds.

    Returns:
        ``None`` if the file looks complete, else what is wrong (for an error message).
    """
    path = Path(path)
    size = path.stat().st_size
    if size < len(_PNG_SIGNATURE) + len(_PNG_IEND):
        return f"only {size} bytes, too short for a PNG"
    with path.open("rb") as f:
        head = f.read(len(_PNG_SIGNATURE))
        f.seek(-len(_PNG_IEND), 2)
        tail = f.read()
    if head != _PNG_SIGNATURE:
        return "no PNG signature (not a PNG file)"
    if tail != _PNG_IEND:
        return "no IEND chunk at the end (truncated PNG)"
    return None


def read_png_grey(path: str | Path) -> np.ndarray:
    """Decode a PNG (or any PIL-readable image) to grey.

    8-bit grey is divided by 255, 16-bit grey by 65535; RGB(A), palette and grey+alpha images are converted
    with PIL's ITU-R 601-2 luma (``L = 0.299 R + 0.587 G + 0.114 B``).

    Returns:
        ``float32 [H, W]`` in ``[0, 1]``.

    Raises:
        ValueError: the file cannot be decoded (truncated, corrupt), naming the file.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
            if img.mode == "F":
                raise BadInput(f"{path}: 32-bit float image; expected 8/16-bit grey or RGB")
            grey = img if img.mode == "L" else img.convert("L")
            return np.asarray(grey, dtype=np.float32) / 255.0
    except (OSError, SyntaxError) as err:  # PIL raises OSError for truncated data, SyntaxError for bad chunks
        raise BadInput(f"{path}: cannot decode the image ({err}); expected a complete PNG") from err


def read_dicom_grey(path: str | Path) -> np.ndarray:
    """Decode a single-frame grey DICOM radiograph (CR, DX, ...) to display grey.

    Steps: modality LUT / rescale; then the VOI LUT sequence if present (pydicom's ``apply_voi_lut``, output
    divided by its ``2**bits - 1`` range), else the first window (``WindowCenter``/``WindowWidth``, LINEAR:
    ``(x - (c - w/2)) / w`` clipped to ``[0, 1]``; SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``), else min-max
    over the image; finally ``MONOCHROME1`` is inverted so that 1 is white (bone) and 0 black (air).

    Returns:
        ``float32 [H, W]`` in ``[0, 1]``.

    Raises:
        ValueError: unreadable file, no pixel data, colour or multi-frame data, naming the file.
    """
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad files and unsupported transfer syntaxes
        raise BadInput(f"{path}: cannot read DICOM pixel data ({err}); expected a readable DICOM") from err
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or pixels.ndim != 2:
        raise BadInput(
            f"{path}: PhotometricInterpretation {photometric}, pixel array {pixels.shape}; "
            "expected one grey frame (MONOCHROME1/2) of a radiograph"
        )
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    grey = _voi_to_unit(values, ds)
    if photometric == "MONOCHROME1":
        grey = 1.0 - grey
    return grey.astype(np.float32)


def _voi_to_unit(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """VOI LUT, window or min-max: modality values -> ``[0, 1]``."""
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        lut_input = np.round(values).astype(np.int64)  # a VOI LUT maps integer values
        return np.clip(apply_voi_lut(lut_input, ds, prefer_lut=True) / (2**bits - 1), 0.0, 1.0)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center = _first(ds.WindowCenter)
        width = max(_first(ds.WindowWidth), 1e-6)
        if str(ds.get("VOILUTFunction", "LINEAR")).upper() == "SIGMOID":
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        return np.clip((values - (center - width / 2.0)) / width, 0.0, 1.0)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _first(value: object) -> float:
    """First value of a possibly multi-valued DICOM element."""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return float(value[0])
    return float(value)


def read_radiograph(path: str | Path) -> np.ndarray:
    """Read a radiograph file (DICOM or PNG/JPEG) as ``float32 [H, W]`` grey in ``[0, 1]``, 1 = white."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    return read_dicom_grey(path) if looks_like_dicom(path) else read_png_grey(path)
