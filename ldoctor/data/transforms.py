"""MONAI dictionary transforms for 2D radiographs (ChestX-ray14 PNGs, CR/DX DICOM, MedMNIST arrays).

The pipeline has two halves:

1. **Deterministic, cacheable** (:func:`radiograph_preprocess`, :func:`array_preprocess`): decode the file,
   convert to one grey channel in ``[0, 1]`` (DICOM: modality LUT, VOI LUT or window, ``MONOCHROME1``
   inverted; RGB: ITU-R 601-2 luma), resize the longer side to ``image_size`` and pad to a square, then
   quantise to ``uint8`` ``[channels, S, S]``. This is what a cache stores (``S * S`` bytes per grey image,
   50 KiB at 224 px), so later epochs never decode a 1024 px PNG again.
2. **Per epoch** (:func:`radiograph_postprocess`): back to float ``[0, 1]``, the ``Rand*d`` augmentation
   (small affine, gamma contrast, Gaussian noise; no flips: the heart is on the left), three channels and
   ImageNet normalisation, giving ``"image"`` ``float32 [3, S, S]``.

Example:
    >>> pre = radiograph_preprocess(image_size=224)          # doctest: +SKIP
    >>> post = radiograph_postprocess(RadiographAugmentation(), image_size=224)  # doctest: +SKIP
    >>> sample = post(pre({"image": "images/00000001_000.png", "label": label, "id": "00000001_000.png"}))
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    Resized,
    ResizeWithPadOrCropd,
    Transform,
)
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

#: ImageNet channel statistics (torchvision's ``IMAGENET1K`` preprocessing), RGB order.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

DICOM_SUFFIXES = (".dcm", ".dicom")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class RadiographAugmentation:
    """Strengths of the per-epoch radiograph augmentation; every transform fires with probability ``prob``.

    Args:
        rotate_degrees: maximum in-plane rotation, degrees (uniform in ``[-r, r]``).
        scale: maximum relative zoom (uniform in ``[-s, s]``, 0.05 = +-5 %).
        translate: maximum shift as a fraction of the image side.
        gamma: range of the contrast gamma (``RandAdjustContrastd``).
        noise_std: standard deviation of additive Gaussian noise, in units of the ``[0, 1]`` intensity.
        prob: probability of each of the three transforms.
    """

    rotate_degrees: float = 7.0
    scale: float = 0.07
    translate: float = 0.05
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.01
    prob: float = 0.5


#: The default augmentation (frozen, so sharing one instance as a default argument is safe).
DEFAULT_AUGMENTATION = RadiographAugmentation()


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` suffix or the ``DICM`` magic at byte 128 (DICOM Part 10)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


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
                raise ValueError(f"{path}: 32-bit float image; expected 8/16-bit grey or RGB")
            grey = img if img.mode == "L" else img.convert("L")
            return np.asarray(grey, dtype=np.float32) / 255.0
    except (OSError, SyntaxError) as err:  # PIL raises OSError for truncated data, SyntaxError for bad chunks
        raise ValueError(f"{path}: cannot decode the image ({err}); expected a complete PNG") from err


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
        raise ValueError(f"{path}: cannot read DICOM pixel data ({err}); expected a readable DICOM") from err
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or pixels.ndim != 2:
        raise ValueError(
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
    return read_dicom_grey(path) if is_dicom(path) else read_png_grey(path)


class LoadRadiographd(MapTransform):
    """Replace a file path by its pixels: ``float32 [1, H, W]`` in ``[0, 1]`` (:func:`read_radiograph`)."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = read_radiograph(str(d[key]))[None]
        return d


class UnitScaled(MapTransform):
    """``uint8`` arrays ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` -> ``float32 [C, H, W]`` in ``[0, 1]``.

    Channels-last input (the MedMNIST layout: last axis of size 3) is moved to the front; ``[H, W]`` becomes
    ``[1, H, W]``.
    """

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            array = np.asarray(d[key])
            if array.ndim == 2:
                array = array[None]
            elif array.ndim == 3 and array.shape[-1] in (1, 3) and array.shape[0] not in (1, 3):
                array = np.moveaxis(array, -1, 0)
            d[key] = array.astype(np.float32) / 255.0
        return d


class QuantizeUint8d(MapTransform):
    """``[0, 1]`` float -> ``uint8`` ``round(255 x)`` (the cached form; one grey level = 1/255)."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = torch.as_tensor(d[key]).as_subclass(torch.Tensor).float()
            d[key] = torch.round(value.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
        return d


class DequantizeUint8d(MapTransform):
    """``uint8`` -> ``float32`` in ``[0, 1]`` (``x / 255``)."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(d[key]).as_subclass(torch.Tensor).float() / 255.0
        return d


class ToThreeChannelsd(MapTransform):
    """Grey ``[1, H, W]`` -> ``[3, H, W]`` by repetition; three channels pass through; others fail."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            channels = image.shape[0]
            if channels == 1:
                d[key] = image.repeat(3, 1, 1) if isinstance(image, torch.Tensor) else np.repeat(image, 3, 0)
            elif channels != 3:
                raise ValueError(f"{key!r} has {channels} channels; expected 1 (grey) or 3 (RGB)")
        return d


def _resize_to_square(image_size: int, mode: str) -> list[Transform]:
    """Longer side -> ``image_size`` (aspect kept), then centre pad with black to a square."""
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
    return [
        Resized("image", spatial_size=image_size, size_mode="longest", mode=mode),
        ResizeWithPadOrCropd("image", spatial_size=(image_size, image_size), mode="constant"),
    ]


def radiograph_preprocess(image_size: int = 224) -> Compose:
    """Deterministic part for radiograph files: ``{"image": path}`` -> ``{"image": uint8 [1, S, S]}``.

    Downsampling uses ``area`` interpolation (box filter), which avoids aliasing of 1024 px images.
    """
    resize = _resize_to_square(image_size, "area")
    return Compose([LoadRadiographd("image"), *resize, QuantizeUint8d("image"), _plain_tensors()])


def array_preprocess(image_size: int = 64) -> Compose:
    """Deterministic part for in-memory ``uint8`` images (MedMNIST): -> ``{"image": uint8 [C, S, S]}``.

    Upsampling uses bilinear interpolation (area would replicate pixels).
    """
    resize = _resize_to_square(image_size, "bilinear")
    return Compose([UnitScaled("image"), *resize, QuantizeUint8d("image"), _plain_tensors()])


def resize_uint8_batch(images: np.ndarray, image_size: int, chunk: int = 1024) -> torch.Tensor:
    """Vectorised :func:`array_preprocess` for a whole array of square images (MedMNIST).

    Same result as the per-sample transforms for square inputs (bilinear, ``align_corners=False``, rounded to
    ``uint8``), but one ``interpolate`` call per ``chunk`` images instead of one MONAI pipeline per image.

    Args:
        images: ``uint8 [N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB), ``H == W``.
        image_size: output side ``S``, pixels.
        chunk: images per interpolation call (bounds the float32 memory).

    Returns:
        ``uint8 [N, C, S, S]``, ``C`` = 1 or 3.
    """
    array = torch.from_numpy(np.ascontiguousarray(images))
    array = array[:, None] if array.ndim == 3 else array.permute(0, 3, 1, 2)
    if array.shape[-1] != array.shape[-2]:
        raise ValueError(f"resize_uint8_batch needs square images, got {tuple(array.shape[-2:])}")
    out = torch.empty((array.shape[0], array.shape[1], image_size, image_size), dtype=torch.uint8)
    for start in range(0, len(array), chunk):
        part = array[start : start + chunk].float() / 255.0
        if part.shape[-1] != image_size:
            part = torch.nn.functional.interpolate(part, size=(image_size, image_size), mode="bilinear")
        out[start : start + chunk] = torch.round(part.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return out


def _plain_tensors() -> EnsureTyped:
    """Plain tensors without MONAI metadata: small cache files, default collate, ``weights_only`` loading."""
    return EnsureTyped(["image", "label"], data_type="tensor", track_meta=False, allow_missing_keys=True)


def augmentation_transforms(aug: RadiographAugmentation, image_size: int) -> list[Transform]:
    """``Rand*d`` transforms on float ``[C, S, S]`` images in ``[0, 1]`` (one draw per sample).

    Args:
        aug: augmentation strengths.
        image_size: side ``S`` of the images, pixels (turns ``aug.translate`` into pixels).
    """
    if not 0.0 <= aug.prob <= 1.0:
        raise ValueError(f"RadiographAugmentation.prob must be in [0, 1], got {aug.prob}")
    shift = aug.translate * image_size
    return [
        RandAffined(
            "image",
            prob=aug.prob,
            rotate_range=math.radians(aug.rotate_degrees),
            scale_range=(aug.scale, aug.scale),
            translate_range=(shift, shift),
            padding_mode="border",
            mode="bilinear",
        ),
        RandAdjustContrastd("image", prob=aug.prob, gamma=aug.gamma),
        RandGaussianNoised("image", prob=aug.prob, mean=0.0, std=aug.noise_std),
    ]


def radiograph_postprocess(
    augmentation: RadiographAugmentation | None = None, image_size: int = 224
) -> Compose:
    """Per-epoch part: cached ``uint8 [C, S, S]`` -> ``float32 [3, S, S]`` ImageNet-normalised.

    Args:
        augmentation: strengths of the ``Rand*d`` transforms; ``None`` for validation/test (no randomness).
        image_size: side ``S`` of the cached images, pixels.
    """
    steps: list[Transform] = [DequantizeUint8d("image")]
    if augmentation is not None:
        steps += augmentation_transforms(augmentation, image_size)
    steps += [
        ToThreeChannelsd("image"),
        NormalizeIntensityd(
            "image", subtrahend=np.array(IMAGENET_MEAN), divisor=np.array(IMAGENET_STD), channel_wise=True
        ),
        EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
    return Compose(steps)


def imagenet_range() -> tuple[float, float]:
    """Smallest and largest value an ImageNet-normalised ``[0, 1]`` image can take, over the 3 channels."""
    low = min((0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    high = max((1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    return low, high


def denormalize(image: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """Undo ImageNet normalisation of one channel: ``[..., 3, H, W]`` -> ``[..., H, W]`` in ``[0, 1]``."""
    return image[..., channel, :, :] * IMAGENET_STD[channel] + IMAGENET_MEAN[channel]


__all__: Sequence[str] = (
    "DEFAULT_AUGMENTATION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DequantizeUint8d",
    "LoadRadiographd",
    "QuantizeUint8d",
    "RadiographAugmentation",
    "ToThreeChannelsd",
    "UnitScaled",
    "array_preprocess",
    "augmentation_transforms",
    "check_png",
    "denormalize",
    "imagenet_range",
    "is_dicom",
    "radiograph_postprocess",
    "radiograph_preprocess",
    "resize_uint8_batch",
    "read_dicom_grey",
    "read_png_grey",
    "read_radiograph",
)
