"""Nodule shape and density measured from the CT patch itself (hand-made radiomic features).

The image model reads a nodule from 2.5D views; size, the strongest malignancy cue in the LIDC ratings, is
easier to measure than to learn from a few thousand nodules. These features measure it from the HU cube, for a
regression stacked with the image model (:mod:`ldoctor.evaluation.stacking`, ``LIDCDataModule(radiomics="batch")``) or for
a linear side path in the ``tumor`` head (``radiomics="head"``, ``TaskSpec.feature_names``). They need nothing
but the image: no reader outline, so they are available for any new scan.

Segmentation of the lesion (:func:`segment_lesion`):

1. threshold at half way between the background (10th HU percentile of the cube's samples above
   :data:`AIR_HU`: lung parenchyma, not the air outside the body or a scan's padding) and the
   lesion's peak (90th percentile within ``seed_radius_mm`` of the centre), a half-maximum edge, but at most
   :data:`LESION_CONTRAST_HU` above the background: a faint ground-glass nodule is cut at half its contrast, and
   the ground-glass rim of a part-solid one stays in the lesion;
2. cut attached vessels: going out from the centre in 1-sample shells, the lesion ends at the first shell less
   than :data:`SHELL_SHARE` of which is above the threshold (a vessel crossing a shell covers a small share of
   it, the nodule most of it), and the mask is kept within that radius plus one sample;
3. keep the connected component (26-neighbourhood) of the brightest voxel near the centre.

The solid core is the same with a fixed threshold, :data:`SOLID_HU`. Per segmentation: log volume, log largest
in-plane extent, log extent along the patient axis, log surface voxel count (irregular margins raise it relative
to the volume). Then the lesion's partial-volume mass (the sum of each voxel's contrast relative to the peak,
around the lesion: its volume counting soft edges as fractions), its mean HU, the peak HU, and whether the lesion
reaches the patch border (larger than the patch).

Example:
    >>> cube = np.full((32, 32, 32), -850.0, dtype=np.float32)
    >>> cube[12:20, 12:20, 12:20] = 30.0  # an 8 mm solid cube at 1 mm
    >>> f = dict(zip(RADIOMIC_FEATURES, nodule_radiomics(cube, spacing_mm=1.0)))
    >>> round(float(np.expm1(f["lesion_log_volume_mm3"]))), round(float(np.expm1(f["lesion_log_extent_inplane_mm"])))
    (512, 8)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Threshold of the solid core, HU.
SOLID_HU = -300.0
#: The lesion threshold is at most this far above the background, HU: a part-solid nodule's peak is its solid
#: core, and half way to it would leave the ground-glass rim out.
LESION_CONTRAST_HU = 150.0
#: Samples at or below this are air (outside the body or the scan, padding) and left out of the background.
AIR_HU = -950.0
#: A shell around the centre less than this share above threshold ends the lesion (vessels cover less).
SHELL_SHARE = 0.25

_PER_SEGMENT = ("log_volume_mm3", "log_extent_inplane_mm", "log_extent_z_mm", "log_surface_voxels")
#: Names of :func:`nodule_radiomics`' outputs, in order.
RADIOMIC_FEATURES: tuple[str, ...] = (
    *(f"lesion_{name}" for name in _PER_SEGMENT),
    "lesion_log_mass_mm3",
    *(f"solid_{name}" for name in _PER_SEGMENT),
    "lesion_mean_hu_per_1000",
    "peak_hu_per_1000",
    "touches_border",
)

_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def _radius(shape: tuple[int, ...]) -> np.ndarray:
    """Distance of every sample from the cube's centre, in samples."""
    grids = np.meshgrid(*(np.arange(n) - (n - 1) / 2.0 for n in shape), indexing="ij")
    return np.sqrt(sum(g**2 for g in grids))


def segment_lesion(hu: np.ndarray, threshold: float, radius: np.ndarray, near_centre: np.ndarray) -> np.ndarray:
    """Bool mask of the lesion at ``threshold`` (steps 2 and 3 of the module docstring); empty when no voxel
    near the centre is above it."""
    mask = hu > threshold
    seeds = mask & near_centre
    if not seeds.any():
        return np.zeros_like(mask)
    for r in np.arange(1.0, radius.max()):
        shell = (radius >= r - 0.5) & (radius < r + 0.5)
        if mask[shell].mean() < SHELL_SHARE:
            mask &= radius <= r + 1.0
            break
    seed = np.unravel_index(np.argmax(np.where(seeds, hu, -np.inf)), hu.shape)
    labels, _ = ndimage.label(mask, structure=_CONNECTIVITY)
    return labels == labels[seed]


def _shape(component: np.ndarray, spacing_mm: float) -> list[float]:
    if not component.any():
        return [0.0, 0.0, 0.0, 0.0]
    xs, ys, zs = (np.nonzero(component.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3))
    inplane = max(xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1) * spacing_mm
    along_z = (zs[-1] - zs[0] + 1) * spacing_mm
    surface = component & ~ndimage.binary_erosion(component)
    return [float(np.log1p(component.sum() * spacing_mm**3)), float(np.log1p(inplane)), float(np.log1p(along_z)),
            float(np.log1p(surface.sum()))]


def nodule_radiomics(hu: np.ndarray, spacing_mm: float, seed_radius_mm: float = 3.0) -> np.ndarray:
    """Shape and density features of the nodule at the centre of a HU cube.

    Args:
        hu: ``[X, Y, Z]`` HU cube centred on the nodule, isotropic, axes ``(x, y, z)`` (z along the patient).
        spacing_mm: the cube's sample spacing, mm.
        seed_radius_mm: the lesion must have a voxel this close to the centre, else its shape features are 0.

    Returns:
        float32 ``[len(RADIOMIC_FEATURES)]`` in :data:`RADIOMIC_FEATURES` order.

    Raises:
        ValueError: for a cube that is not 3D or holds a non-finite value.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3 or not np.isfinite(hu).all():
        raise ValueError(f"nodule_radiomics needs a finite 3D HU cube, got shape {hu.shape}")
    radius = _radius(hu.shape)
    near_centre = radius * spacing_mm <= seed_radius_mm
    tissue = hu[hu > AIR_HU]
    background = float(np.percentile(tissue if tissue.size >= hu.size // 10 else hu, 10))
    peak = float(np.percentile(hu[near_centre], 90))
    threshold = background + min(0.5 * (peak - background), LESION_CONTRAST_HU)
    lesion = segment_lesion(hu, threshold, radius, near_centre)
    solid = segment_lesion(hu, SOLID_HU, radius, near_centre)
    around = ndimage.binary_dilation(lesion, _CONNECTIVITY, iterations=2)
    contrast = np.clip((hu[around] - background) / max(peak - background, 50.0), 0.0, 1.0)
    mass = float(np.log1p(contrast.sum() * spacing_mm**3))
    mean_hu = float(hu[lesion].mean()) if lesion.any() else background
    border = lesion.copy()
    border[1:-1, 1:-1, 1:-1] = False
    features = [*_shape(lesion, spacing_mm), mass, *_shape(solid, spacing_mm), mean_hu / 1000.0,
                float(hu[near_centre].max()) / 1000.0, float(border.any())]
    return np.asarray(features, dtype=np.float32)
