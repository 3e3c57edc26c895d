"""MONAI dictionary transforms for 2D radiographs (ChestX-ray14 PNGs, CR/DX DICOM, MedMNIST arrays).

The pipeline has two halves:

1. **Deterministic, cacheable** (:func:`radiograph_preprocess`, :func:`resize_uint8_batch` for arrays): decode the file,
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
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
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

from ldoctor.io.radiograph import RADIOGRAPH_EXPECTED, read_radiograph
from ldoctor.transforms.failures import RecordFile

#: ImageNet channel statistics (torchvision's ``IMAGENET1K`` preprocessing), RGB order.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: A radiograph record's file, for the errors of :func:`radiograph_preprocess` (:mod:`ldoctor.transforms.cache`).
RADIOGRAPH_FILE = RecordFile("image", RADIOGRAPH_EXPECTED, "unreadable images")


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


class LoadRadiographd(MapTransform):
    """Replace a file path by its pixels: ``float32 [1, H, W]`` in ``[0, 1]`` (:func:`read_radiograph`)."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = read_radiograph(str(d[key]))[None]
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


def resize_uint8_batch(images: np.ndarray, image_size: int, chunk: int = 1024) -> torch.Tensor:
    """Resize a whole array of square ``uint8`` images at once (MedMNIST): bilinear upsampling, rounded to ``uint8``.

    The same result as MONAI's ``Resized(mode="bilinear")`` per image for square inputs (``align_corners=False``),
    but one ``interpolate`` call per ``chunk`` images instead of one pipeline per image.

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
