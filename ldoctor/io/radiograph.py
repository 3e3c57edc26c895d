"""Radiographs from PNG (8/16-bit grey, RGB) or single-frame DICOM (CR, DX; MONOCHROME1/2) as grey in ``[0, 1]``.

Bit depth: a 16-bit PNG often holds 10-, 12- or 14-bit detector data; dividing it by 65535 would leave a 12-bit
image 16 grey levels after quantisation. :func:`png_bit_depth` gives the depth the data use (the ``sBIT`` chunk,
else the smallest of 8/10/12/14/16 bits that holds the image's maximum) and the image is divided by
``2**bits - 1``. DICOM states its depth (``BitsStored``; pydicom masks the unused bits) and is mapped to grey by its
VOI LUT, window or min-max, none of which depends on the 16-bit container.

Refused, naming the file: an image whose content is only in its alpha channel (colour constant, alpha varying:
it would turn uniformly black or white); a DICOM whose ``Modality`` is not a radiograph's
(:data:`RADIOGRAPH_MODALITIES`; a missing ``Modality`` or ``OT`` is read with a warning); an image larger than PIL's
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million pixels; raise it for a genuine image).

Cheap checks that read headers only, for setup time (:func:`check_radiograph_file`): a PNG's signature, ``IEND``
trailer and ``IHDR`` size (:func:`check_png`); a DICOM's modality, frames, photometric interpretation, transfer syntax
decoder and pixel data length (:func:`check_radiograph_dicom`). The readers apply the same rules when they decode.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from ldoctor.errors import BadInput
from ldoctor.io.dicom import decoder_problem, looks_like_dicom, pixel_data_problem, read_header
from ldoctor.privacy import redact

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: Bit depths a 16-bit PNG without ``sBIT`` is assumed to hold, smallest first (:func:`png_bit_depth`).
PNG_BIT_DEPTHS = (8, 10, 12, 14, 16)
#: DICOM ``Modality`` values read as radiographs: computed, digital, "DR" as some exporters write it, and
#: conventional (film) radiography.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG")
#: ``Modality`` values read with a warning: none stated, or ``OT`` (other: e.g. a digitised film).
WARNED_MODALITIES = ("", "OT")
_warned: set[str] = set()  # modalities warned about in this process (one warning each)
#: What a radiograph file should be, for messages.
RADIOGRAPH_EXPECTED = "a readable radiograph (PNG or JPEG, or a single-frame grey DICOM)"


def png_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's ``IHDR`` chunk (the first 24 bytes); ``None`` when there is no ``IHDR``."""
    with Path(path).open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def size_problem(width: int, height: int) -> str | None:
    """An image over PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``; ``None`` disables it)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or width * height <= limit:
        return None
    return (f"{width} x {height} pixels ({width * height}) exceed the decompression-bomb limit of {limit} pixels "
            "(PIL.Image.MAX_IMAGE_PIXELS; raise it if the image is genuine)")


def check_png(path: str | Path) -> str | None:
    """Cheap integrity check of a PNG without decoding it: the signature, the ``IEND`` trailer and the ``IHDR`` size.

    A download cut short loses the trailer, so this catches truncated files in microseconds; an ``IHDR`` claiming more
    pixels than PIL's decompression-bomb limit (:func:`size_problem`) is refused before anything is decoded. Corrupt
    data inside a complete file is only found when it is decoded (:func:`read_png_grey`).

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
    dimensions = png_size(path)
    if dimensions is None:
        return "no IHDR chunk after the signature (corrupt PNG)"
    return size_problem(*dimensions)


def png_sbit(path: str | Path) -> int | None:
    """The significant bits of the grey (or first colour) channel from a PNG's ``sBIT`` chunk; ``None`` without one.

    PIL does not expose ``sBIT``, so the chunks before the image data are walked here (headers only).
    """
    with Path(path).open("rb") as f:
        if f.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind == b"sBIT":
                data = f.read(length)
                return int(data[0]) if data else None
            if kind in (b"IDAT", b"IEND"):
                return None
            f.seek(length + 4, 1)  # data and CRC


def png_bit_depth(path: str | Path, maximum: int) -> int:
    """Bits a 16-bit grey PNG's values use, so that the image is divided by ``2**bits - 1``.

    Rule: with an ``sBIT`` chunk of ``b`` bits, ``b`` when every value is below ``2**b`` (the data stored unscaled,
    as most detector exports do), else 16 (the data scaled up to the full 16 bits as the PNG standard asks: ``sBIT``
    only records the original depth); without ``sBIT``, the smallest of :data:`PNG_BIT_DEPTHS` that holds the
    image's ``maximum``. (So a genuinely 16-bit image with no value above 4095 is read as 12-bit: brighter, but with
    every grey level kept.)
    """
    sbit = png_sbit(path)
    if sbit is not None and 1 <= sbit < 16:
        return sbit if maximum < 2**sbit else 16
    if sbit is not None and sbit == 16:
        return 16
    return next(bits for bits in PNG_BIT_DEPTHS if maximum < 2**bits)


def _check_alpha(img: Image.Image, path: str | Path) -> None:
    """Refuse an image whose colour is constant while its alpha varies: its content is in the alpha channel only."""
    if img.mode in ("P", "PA") and (img.mode == "PA" or "transparency" in img.info):
        img = img.convert("RGBA")
    if "A" not in img.getbands() and "a" not in img.getbands():
        return
    pixels = np.asarray(img)
    colour, alpha = pixels[..., :-1], pixels[..., -1]
    if colour.min() == colour.max() and alpha.min() != alpha.max():
        raise BadInput(
            f"{path}: {img.mode} image whose colour channels are all {int(colour.flat[0])} and whose alpha channel "
            f"varies ({int(alpha.min())}..{int(alpha.max())}): the picture is only in the alpha channel and would read "
            "as a uniform image; expected the radiograph in the grey or colour channels (convert it, e.g. alpha -> "
            "grey)"
        )


def read_png_grey(path: str | Path) -> np.ndarray:
    """Decode a PNG (or any PIL-readable image) to grey.

    8-bit grey is divided by 255; 16-bit grey by ``2**bits - 1`` with ``bits`` from :func:`png_bit_depth` (the
    ``sBIT`` chunk, else the smallest of 8/10/12/14/16 bits holding the maximum); RGB(A), palette and grey+alpha
    images are converted with PIL's ITU-R 601-2 luma (``L = 0.299 R + 0.587 G + 0.114 B``), the alpha dropped.

    Returns:
        ``float32 [H, W]`` in ``[0, 1]``.

    Raises:
        ValueError: the file cannot be decoded (truncated, corrupt), more pixels than the decompression-bomb limit
            (:func:`size_problem`, checked before decoding), a 32-bit float image, integer values outside
            ``[0, 65535]``, or content only in the alpha channel, naming the file.
    """
    dimensions = png_size(path)
    problem = size_problem(*dimensions) if dimensions is not None else None
    if problem is not None:  # from the IHDR alone: PIL never sees it
        raise BadInput(f"{path}: {problem}; expected {RADIOGRAPH_EXPECTED}")
    try:
        with Image.open(path) as img:
            problem = size_problem(*img.size)  # other formats: PIL only warns up to twice its limit
            if problem is not None:
                raise BadInput(f"{path}: {problem}; expected {RADIOGRAPH_EXPECTED}")
            img.load()
            return _grey(img, path)
    except Image.DecompressionBombError as err:  # not an OSError
        raise BadInput(f"{path}: {err} (PIL.Image.MAX_IMAGE_PIXELS is {Image.MAX_IMAGE_PIXELS}; raise it if the image "
                       f"is genuine); expected {RADIOGRAPH_EXPECTED}") from err
    except (OSError, SyntaxError) as err:  # PIL raises OSError for truncated data, SyntaxError for bad chunks
        raise BadInput(f"{path}: cannot decode the image ({err}); expected a complete PNG") from err


def _grey(img: Image.Image, path: str | Path) -> np.ndarray:
    """A loaded PIL image -> ``float32 [H, W]`` grey in ``[0, 1]`` (:func:`read_png_grey`)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(img).astype(np.int64)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise BadInput(f"{path}: integer image with values {low}..{high}; expected 8/16-bit grey (0..65535)")
        bits = png_bit_depth(path, high)
        return (values / float(2**bits - 1)).astype(np.float32)
    if img.mode == "F":
        raise BadInput(f"{path}: 32-bit float image; expected 8/16-bit grey or RGB")
    _check_alpha(img, path)
    grey = img if img.mode == "L" else img.convert("L")
    return np.asarray(grey, dtype=np.float32) / 255.0


def check_modality(ds: pydicom.Dataset, path: str | Path) -> None:
    """Refuse a DICOM whose ``Modality`` is not a radiograph's; warn (once per modality) for none or ``OT``.

    Raises:
        BadInput: e.g. ``CT``, ``MR``, ``MG``, naming the file and the modality found.
    """
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in RADIOGRAPH_MODALITIES:
        return
    if modality in WARNED_MODALITIES:
        if modality not in _warned:
            _warned.add(modality)
            stated = f"Modality {modality}" if modality else "no Modality"
            warnings.warn(f"{redact(str(path))}: {stated}; read as a radiograph (expected {', '.join(RADIOGRAPH_MODALITIES)}); "
                          "further such files are not reported", UserWarning, stacklevel=3)
        return
    raise BadInput(f"{path}: Modality {modality}; expected a radiograph ({', '.join(RADIOGRAPH_MODALITIES)})")


def check_radiograph_dicom(path: str | Path) -> None:
    """Header-only checks of a DICOM radiograph, nothing decoded: a readable header, a radiograph's ``Modality``
    (:func:`check_modality`), one frame, grey (``MONOCHROME1/2``, one sample per pixel), a transfer syntax the installed
    pydicom plugins decode (:func:`ldoctor.io.dicom.decoder_problem`) and, uncompressed, pixel data as long as the
    header says (:func:`ldoctor.io.dicom.pixel_data_problem`).

    Raises:
        BadInput: naming the file, what was found and what was expected.
    """
    try:
        ds, offset = read_header(path)
    except Exception as err:  # pydicom raises many types for bad files
        raise BadInput(f"{path}: cannot read DICOM ({err}); expected a readable DICOM") from err
    check_modality(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        raise BadInput(f"{path}: multi-frame DICOM ({frames} frames, NumberOfFrames); expected one frame, a single "
                       "radiograph (export the frame you mean as a file of its own)")
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadInput(f"{path}: PhotometricInterpretation {photometric}, {samples} sample(s) per pixel; expected one "
                       "grey frame (MONOCHROME1/2) of a radiograph")
    problem = decoder_problem(ds) or pixel_data_problem(ds, offset, Path(path).stat().st_size)
    if problem is not None:
        raise BadInput(f"{path}: {problem}; expected {RADIOGRAPH_EXPECTED}")


def read_dicom_grey(path: str | Path) -> np.ndarray:
    """Decode a single-frame grey DICOM radiograph (CR, DX, ...) to display grey.

    Steps: modality LUT / rescale; then the VOI LUT sequence if present (pydicom's ``apply_voi_lut``, output
    divided by its ``2**bits - 1`` range), else the first window (``WindowCenter``/``WindowWidth``, LINEAR:
    ``(x - (c - w/2)) / w`` clipped to ``[0, 1]``; SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``), else min-max
    over the image; finally ``MONOCHROME1`` is inverted so that 1 is white (bone) and 0 black (air).

    Returns:
        ``float32 [H, W]`` in ``[0, 1]``.

    The stored depth is ``BitsStored`` (pydicom masks the unused high bits), and none of the three mappings
    depends on the 16-bit container, so 12-bit data span the whole grey range.

    Raises:
        ValueError: the header checks of :func:`check_radiograph_dicom` (unreadable, not a radiograph's
            ``Modality``, colour or multi-frame, no decoder, truncated), then pixel data that cannot be decoded,
            naming the file.
    """
    check_radiograph_dicom(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types for bad files
        raise BadInput(f"{path}: cannot read DICOM ({err}); expected a readable DICOM") from err
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad files and unsupported transfer syntaxes
        raise BadInput(f"{path}: cannot read DICOM pixel data ({err}); expected a readable DICOM") from err
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim != 2:
        raise BadInput(f"{path}: pixel array {pixels.shape}; expected one grey frame (MONOCHROME1/2) of a radiograph")
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


def check_radiograph_file(path: str | Path) -> None:
    """Cheap checks of a radiograph file at setup, reading headers only: :func:`check_radiograph_dicom` for a DICOM,
    :func:`check_png` for a ``.png``; other formats (JPEG) are only checked when decoded.

    Raises:
        FileNotFoundError: no such file.
        BadInput: naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    if looks_like_dicom(path):
        check_radiograph_dicom(path)
    elif path.suffix.lower() == ".png" and (problem := check_png(path)) is not None:
        raise BadInput(f"{path}: {problem}; expected a complete PNG")


def read_radiograph(path: str | Path) -> np.ndarray:
    """Read a radiograph file (DICOM or PNG/JPEG) as ``float32 [H, W]`` grey in ``[0, 1]``, 1 = white."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    return read_dicom_grey(path) if looks_like_dicom(path) else read_png_grey(path)
