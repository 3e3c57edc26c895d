"""Small PNGs for the report page: grey images and transparent heat-map overlays (bytes, inlined by the renderer)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

#: Heat below this share of the map's range is fully transparent (the overlay shows where attention is high).
HEAT_FLOOR = 0.2
#: Opacity of the hottest pixels.
HEAT_ALPHA = 0.65


def png_bytes(pixels: np.ndarray) -> bytes:
    """``uint8 [H, W]`` (grey) or ``[H, W, 4]`` (RGBA) -> optimised PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def grey_png(image: np.ndarray | torch.Tensor, size: int | None = None) -> bytes:
    """A ``[H, W]`` image in ``[0, 1]`` as a grey PNG, resized (bilinear) to ``size`` x ``size`` when given."""
    values = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    img = Image.fromarray(np.round(values * 255).astype(np.uint8))
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return png_bytes(np.asarray(img))


def heat_rgba(heat: np.ndarray | torch.Tensor, size: int | None = None) -> np.ndarray:
    """A map in ``[0, 1]`` (``[H, W]``) -> ``uint8 [S, S, 4]``: blue -> yellow -> red, transparent below
    :data:`HEAT_FLOOR`, opacity rising to :data:`HEAT_ALPHA`."""
    values = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    if size is not None and values.shape != (size, size):
        values = np.asarray(Image.fromarray(values).resize((size, size), Image.BILINEAR), dtype=np.float32)
    r = np.clip(2.0 * values, 0.0, 1.0)
    g = np.clip(2.0 - 2.0 * values, 0.0, 1.0) * np.clip(2.0 * values, 0.0, 1.0)
    b = np.clip(1.0 - 2.0 * values, 0.0, 1.0)
    alpha = np.where(values < HEAT_FLOOR, 0.0, HEAT_ALPHA * (values - HEAT_FLOOR) / (1.0 - HEAT_FLOOR))
    return np.round(np.stack([r, g, b, alpha], axis=-1) * 255).astype(np.uint8)


def heat_png(heat: np.ndarray | torch.Tensor, size: int | None = None) -> bytes:
    """:func:`heat_rgba` as PNG bytes."""
    return png_bytes(heat_rgba(heat, size))


def unit_normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map of ``[N, 1, ...]`` scaled to ``[0, 1]`` by its own min and max (all zero when constant).

    The Grad-CAM post-processing passed to MONAI explicitly: high stays high (MONAI's default normaliser returns
    ``1 - x`` of the scaled map, which would show attention as its inverse).
    """
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = torch.where(high > low, (flat - low) / (high - low).clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.view_as(maps)
