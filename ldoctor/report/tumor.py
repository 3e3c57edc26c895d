"""The ``tumor`` section: each candidate nodule's malignancy probability with an uncertainty band, its size and slices.

The nodule-centred cube is cut from the CT exactly as in training (:func:`ldoctor.transforms.ct.nodule_preprocess`
with the checkpoint's patch settings). The probability is the model's on the un-augmented views; the band is the
2.5-97.5 % range over :data:`TTA_SAMPLES` test-time augmentations (the training's 3D augmentation: flips, 90-degree
turns, small affine, noise), which shows how stable the prediction is under plausible changes of the input, not a
calibrated confidence interval. The heat map is Grad-CAM (MONAI, :mod:`ldoctor.report.cam`) of the malignancy logit
on the axial view, shown on every axial slice of the stack ("attention on the axial view"); none when the map holds
no positive evidence.

Size: the candidate list's diameter when it states one, and the diameter measured here: the sphere-equivalent
diameter of the connected region above :data:`SOLID_HU` HU that holds the centre voxel (``None`` when the centre is
below it: a ground-glass or missed centre). No Lung-RADS or Fleischner category is derived: they need inputs the
report does not have (nodule type, growth, prior scans, the patient's risk), so the category is "insufficient
inputs".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ldoctor.report.cam import cam_stage, grad_cam
from ldoctor.report.case import Nodule
from ldoctor.report.images import grey_png, heat_png
from ldoctor.report.schema import INSUFFICIENT

TTA_SAMPLES = 16
#: Voxels above this (HU) count as the nodule when its size is measured.
SOLID_HU = -500.0
#: Axial slices shown per nodule (evenly spaced through the cube) and their side in the page, pixels.
SHOWN_SLICES, DISPLAY_SIZE = 16, 128
CATEGORY_REASON = ("Lung-RADS / Fleischner categories need the nodule type, growth against prior scans and the "
                   "patient's risk factors, which are not inputs of this model; none is derived from a probability")


@dataclass
class NoduleMedia:
    """Axial slices (grey PNGs, inferior to superior) and the heat-map overlay PNG of each."""

    slices: list[bytes] = field(default_factory=list)
    heat: list[bytes] = field(default_factory=list)
    evidence: bool = False  # the heat map shows positive Grad-CAM evidence (else it is transparent)


class _AxialViewLogit(nn.Module):
    """``[V, 3, H, W]`` views of one nodule (the batch of Grad-CAM's hooks) -> its malignancy logit ``[1, 1]``."""

    def __init__(self, net: nn.Module, task: str) -> None:
        super().__init__()
        self.net, self.task = net, task

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.net.forward_task(self.task, {"image": views[None]})


def measured_diameter(cube: np.ndarray, spacing_mm: float, hu_window: tuple[float, float]) -> float | None:
    """Sphere-equivalent diameter (mm) of the region above :data:`SOLID_HU` connected to the cube's centre.

    Args:
        cube: ``[S, S, S]`` windowed to ``[0, 1]`` over ``hu_window``.
    """
    low, high = hu_window
    solid = cube * (high - low) + low > SOLID_HU
    centre = tuple(s // 2 for s in cube.shape)
    if not solid[centre]:
        return None
    labels, _ = ndimage.label(solid)
    region = labels == labels[centre]
    if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any() or region[..., 0].any() \
            or region[..., -1].any():
        return None  # touches the cube's faces: attached to a vessel or the wall, no size from this rule
    volume = float(region.sum()) * spacing_mm**3
    return float((6.0 * volume / np.pi) ** (1.0 / 3.0))


def tumor_section(net: nn.Module, task: str, nodules: list[Nodule], cubes: list[torch.Tensor], views: Any,
                  tta: Any, settings: dict[str, Any], probabilities: list[float],
                  seed: int = 0) -> tuple[dict, dict[int, NoduleMedia]]:
    """Score the nodules of one CT.

    Args:
        net: the multi-task net (eval mode).
        task: the tumor task's name.
        nodules: the candidates, in list order.
        cubes: their preprocessed cubes ``[1, S, S, S]`` in ``[0, 1]`` (training's deterministic step).
        views: the evaluation post-processing (cube -> ``{"image": [V, 3, H, W]}``).
        tta: the training post-processing with augmentation.
        settings: the checkpoint's tumor settings (``spacing_mm``, ``hu_window``, ``views``).
        probabilities: the model's malignancy probability of each nodule (``predict_step``, un-augmented views).
        seed: seeds the test-time augmentation (the same case gives the same report).

    Returns:
        the ``tumor`` entry of ``report.json`` and the images per nodule index (1-based).
    """
    tta.set_random_state(seed)  # MONAI's Rand* transforms draw from their own generators
    entries, media = [], {}
    for index, (nodule, cube, prob) in enumerate(zip(nodules, cubes, probabilities), start=1):
        item = {"image": cube.float(), "label": torch.tensor([float("nan")]), "id": str(index)}
        image = views(dict(item))["image"]
        with torch.no_grad():
            augmented = torch.stack([tta(dict(item))["image"] for _ in range(TTA_SAMPLES)])
            spread = torch.sigmoid(net.forward_task(task, {"image": augmented}))[:, 0].numpy()
        low, high = (float(v) for v in np.percentile(spread, [2.5, 97.5]))
        cube_np = cube[0].float().numpy()
        entries.append({
            "index": index, "center_mm": [round(v, 1) for v in nodule.center_mm],
            "diameter_mm": nodule.diameter_mm, "diameter_source": nodule.diameter_source,
            "measured_diameter_mm": _rounded(measured_diameter(cube_np, settings["spacing_mm"],
                                                               tuple(settings["hu_window"]))),
            "probability": prob, "interval": [min(low, prob), max(high, prob)], "slices": 0,
            "category": INSUFFICIENT, "category_reason": CATEGORY_REASON,
        })
        axial = list(settings["views"]).index("axial") if "axial" in settings["views"] else None
        media[index] = _nodule_media(net, task, cube_np, image, axial)
        entries[-1]["slices"] = len(media[index].slices)
        entries[-1]["heatmap"] = media[index].evidence
    method = f"{TTA_SAMPLES} test-time augmentations (the training's 3D augmentation)"
    return {"method": method, "nodules": entries}, media


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _nodule_media(net: nn.Module, task: str, cube: np.ndarray, views: torch.Tensor, axial: int | None) -> NoduleMedia:
    """Axial slices of the cube (axes x, y, z; slice ``k`` shown as ``[y, x]`` like the axial view) with the Grad-CAM
    map of the axial view (view ``axial``) on each; no heat map when the model sees no axial view."""
    media = NoduleMedia()
    heat = None
    if axial is not None:
        stage = cam_stage(net.trunk, views)
        axial_map = grad_cam(_AxialViewLogit(net, task), views, stage, 0)[axial]  # one map per view
        heat = heat_png(axial_map, DISPLAY_SIZE) if axial_map.max() > 0 else None
    media.evidence = heat is not None
    heat = heat if heat is not None else heat_png(np.zeros((2, 2)), DISPLAY_SIZE)  # the page wants one per slice
    for k in np.linspace(0, cube.shape[2] - 1, min(SHOWN_SLICES, cube.shape[2])).round().astype(int):
        media.slices.append(grey_png(cube[:, :, k].T, DISPLAY_SIZE))
        media.heat.append(heat)
    return media
