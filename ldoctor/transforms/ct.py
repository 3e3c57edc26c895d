"""Nodule-centred CT patches and 2.5D views as MONAI dictionary transforms.

Pipeline (DESIGN decision 2):

1. **Deterministic, cacheable** (:func:`nodule_preprocess`): read the CT volume (DICOM series folder,
   enhanced DICOM or NIfTI) and resample a cube centred on the nodule on a 1 mm isotropic grid aligned with
   the patient axes (LPS), trilinear, outside the scan filled with air (-1000 HU); then the HU window
   ``[-1000, 400]`` -> ``[0, 1]``. ``"image"`` is ``float16 [1, S, S, S]`` with axes ``(x, y, z)``
   (patient left, posterior, superior), ``S = size_mm / spacing_mm``. Resampling through the affine makes
   spacing, slice order and orientation right for any scanner geometry.
2. **Per epoch** (:func:`nodule_postprocess`): 3D ``Rand*d`` augmentation of the cube (flips on each axis,
   90-degree rotations in each plane, a small affine, Gaussian intensity noise), *then* the 2.5D views
   (:class:`Views25Dd`) and ImageNet normalisation: ``"image"`` ``float32 [views, 3, S, S]``.

Example:
    >>> pre = nodule_preprocess(size_mm=64, spacing_mm=1.0)  # doctest: +SKIP
    >>> post = nodule_postprocess(augment=True)  # doctest: +SKIP
    >>> sample = post(pre({"volume": "case/series", "center_mm": [-60.0, 22.5, -130.0], "label": [1.0], "id": "x"}))
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    ScaleIntensityRanged,
    SelectItemsd,
)
from scipy.ndimage import map_coordinates

from ldoctor.io.ct import CTVolume, check_default_rescale, read_ct, world_to_voxel
from ldoctor.transforms.failures import RecordFile
from ldoctor.transforms.radiograph import IMAGENET_MEAN, IMAGENET_STD
from ldoctor.transforms.radiomics import nodule_radiomics

#: Air, used outside the scanned field of view.
AIR_HU = -1000.0
#: View name -> (axis normal to the plane, in the patch's (x, y, z) axes).
VIEW_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
#: A nodule record's CT, for the errors of :func:`nodule_preprocess` (:mod:`ldoctor.transforms.cache`).
CT_FILE = RecordFile("volume", "a readable CT volume (a DICOM series folder, an enhanced CT .dcm or a .nii/.nii.gz) "
                     "holding the nodule", "unreadable volumes")


def extract_patch(
    volume: CTVolume, center_mm: Sequence[float], size_mm: float = 64.0, spacing_mm: float = 1.0, fill_hu: float = AIR_HU
) -> np.ndarray:
    """Resample a cube centred on ``center_mm`` on an isotropic grid aligned with the patient axes.

    Sample ``(a, b, c)`` of the patch lies at world ``center + ((a, b, c) - (S - 1) / 2) * spacing_mm``
    (LPS mm); values are trilinear interpolations of ``volume.hu``.

    Args:
        volume: the CT in HU with its affine.
        center_mm: nodule centre ``(x, y, z)`` in LPS mm.
        size_mm: cube side, mm.
        spacing_mm: sample spacing, mm.
        fill_hu: value outside the volume.

    Returns:
        float32 ``[S, S, S]`` HU, ``S = round(size_mm / spacing_mm)``, axes ``(x, y, z)``.

    Raises:
        ValueError: the centre lies outside the volume (naming the volume and the voxel position).
    """
    center = np.asarray(center_mm, dtype=float)
    center_voxel = world_to_voxel(volume.affine, center[None])[0]
    if np.any(center_voxel < -0.5) or np.any(center_voxel > np.asarray(volume.hu.shape) - 0.5):
        raise ValueError(
            f"{volume.source}: nodule centre {center.round(2).tolist()} mm is outside the volume (voxel "
            f"{center_voxel.round(1).tolist()}, shape {list(volume.hu.shape)}); check the annotation's series"
        )
    size = int(round(size_mm / spacing_mm))
    offsets = (np.arange(size) - (size - 1) / 2.0) * spacing_mm
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3) + center
    voxels = world_to_voxel(volume.affine, grid).T
    patch = map_coordinates(volume.hu, voxels, order=1, mode="constant", cval=fill_hu, prefilter=False)
    return patch.reshape(size, size, size).astype(np.float32)


#: What the three channels of a 2.5D view hold.
VIEW_CHANNELS = ("planes", "projections")


def views_25d(
    cube: torch.Tensor,
    views: Sequence[str] = ("axial", "coronal", "sagittal"),
    offset: int = 1,
    channels: str = "planes",
) -> torch.Tensor:
    """Cut 2.5D views from a cube.

    Args:
        cube: ``[1, S, S, S]`` (or ``[S, S, S]``), axes ``(x, y, z)``.
        views: plane names from ``VIEW_AXES``.
        offset: distance of the neighbouring planes from the centre, in samples (``channels="planes"``).
        channels: ``"planes"``: channel ``c`` is plane ``centre + (c - 1) * offset``. ``"projections"``: the
            central plane, the mean and the maximum intensity projection of the whole cube along the view's
            normal. The mean projection adds up the nodule's thickness at every in-plane point (its sum over the
            view grows with the nodule's volume) and the maximum projection shows the largest extent over all
            planes, which single planes through the centre miss (maximum intensity projections are a standard
            input for lung nodule networks, e.g. Zheng et al., IEEE TMI 39(3):797-805, 2020).

    Returns:
        ``[views, 3, S, S]``. Axial views are ``[y, x]`` (rows anterior -> posterior), coronal and sagittal views
        ``[z, x]`` and ``[z, y]`` with the head at the top (row 0 = most superior).
    """
    if channels not in VIEW_CHANNELS:
        raise ValueError(f"channels must be one of {VIEW_CHANNELS}, got {channels!r}")
    cube = cube[0] if cube.dim() == 4 else cube
    center = cube.shape[0] // 2
    out = []
    for name in views:
        axis = VIEW_AXES[name]
        if channels == "planes":
            planes = [cube.select(axis, center + (c - 1) * offset) for c in range(3)]
        else:
            planes = [cube.select(axis, center), cube.mean(axis), cube.amax(axis)]
        stacked = torch.stack(planes)  # [3, a, b] with the two remaining axes in (x, y, z) order
        if name == "axial":
            stacked = stacked.transpose(1, 2)  # [3, y, x]
        else:
            stacked = stacked.transpose(1, 2).flip(1)  # [3, z, x|y], superior at the top
        out.append(stacked)
    return torch.stack(out)


class VolumeCache:
    """A tiny thread-safe LRU of loaded CT volumes, so several nodules of one series load it once.

    Args:
        size: volumes kept.
        default_rescale: ``(slope, intercept)`` for DICOM slices without ``RescaleSlope`` / ``RescaleIntercept``
            (:func:`~ldoctor.io.ct.read_ct`); ``None`` refuses them.
    """

    def __init__(self, size: int = 2, default_rescale: Sequence[float] | None = None) -> None:
        self.size = size
        self.default_rescale = check_default_rescale(default_rescale)
        self._items: OrderedDict[str, CTVolume] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> CTVolume:
        with self._lock:
            if path in self._items:
                self._items.move_to_end(path)
                return self._items[path]
        volume = read_ct(path) if self.default_rescale is None else read_ct(path, default_rescale=self.default_rescale)
        with self._lock:
            self._items[path] = volume
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return volume


class NodulePatchd(MapTransform):
    """Load the CT of a record and resample the nodule-centred cube into ``"image"`` (HU, ``[1, S, S, S]``).

    Args:
        keys: output key(s) for the patch (default ``"image"``).
        volume_key: record key with the volume: a path (DICOM series folder, ``.dcm`` or NIfTI) or an in-memory
            :class:`~ldoctor.io.ct.CTVolume`.
        center_key: record key with the centre ``[x, y, z]`` in LPS mm.
        size_mm: cube side, mm.
        spacing_mm: sample spacing, mm.
        cached_volumes: volumes kept in memory (records of one series in a row reuse it).
        default_rescale: ``(slope, intercept)`` the scanner used, for DICOM slices without ``RescaleSlope`` /
            ``RescaleIntercept`` (e.g. ``(1, -1024)``); ``None`` (default) refuses such a series, naming the file
            (:mod:`ldoctor.io.ct`, "Rescale rule").
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        volume_key: str = "volume",
        center_key: str = "center_mm",
        size_mm: float = 64.0,
        spacing_mm: float = 1.0,
        cached_volumes: int = 2,
        default_rescale: Sequence[float] | None = None,
    ) -> None:
        super().__init__(keys)
        self.volume_key, self.center_key = volume_key, center_key
        self.size_mm, self.spacing_mm = size_mm, spacing_mm
        self.volumes = VolumeCache(cached_volumes, default_rescale)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        given = d[self.volume_key]
        volume = given if isinstance(given, CTVolume) else self.volumes.get(str(given))
        patch = extract_patch(volume, d[self.center_key], self.size_mm, self.spacing_mm)
        for key in self.keys:
            d[key] = patch[None]
        return d


class NoduleRadiomicsd(MapTransform):
    """Measure the nodule in a HU cube (``[1, S, S, S]``, before windowing) into ``"features"``: float32
    ``[len(RADIOMIC_FEATURES)]`` (:func:`ldoctor.transforms.radiomics.nodule_radiomics`).

    Args:
        keys: key holding the HU cube.
        spacing_mm: the cube's sample spacing, mm.
        output_key: where the features go.
    """

    def __init__(self, keys: KeysCollection = "image", spacing_mm: float = 1.0, output_key: str = "features") -> None:
        super().__init__(keys)
        self.spacing_mm, self.output_key = spacing_mm, output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        (key,) = self.keys
        d[self.output_key] = torch.from_numpy(nodule_radiomics(np.asarray(d[key])[0], self.spacing_mm))
        return d


class Views25Dd(MapTransform):
    """Replace a ``[1, S, S, S]`` cube in ``[0, 1]`` by its 2.5D views ``[views, 3, S, S]`` (:func:`views_25d`).

    Args:
        keys: keys holding cubes.
        views: plane names from :data:`VIEW_AXES`.
        offset: neighbouring-plane distance in samples.
        channels: ``"planes"`` or ``"projections"`` (see :func:`views_25d`).
        mean: per-channel mean subtracted from the views (ImageNet by default, as the trunk expects).
        std: per-channel divisor.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        views: Sequence[str] = ("axial", "coronal", "sagittal"),
        offset: int = 1,
        channels: str = "planes",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(keys)
        unknown = [v for v in views if v not in VIEW_AXES]
        if unknown or not views:
            raise ValueError(f"views must be a non-empty list of {list(VIEW_AXES)}, got {list(views)}")
        if channels not in VIEW_CHANNELS:
            raise ValueError(f"channels must be one of {VIEW_CHANNELS}, got {channels!r}")
        self.views, self.offset, self.channels = tuple(views), offset, channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            cube = torch.as_tensor(d[key], dtype=torch.float32)
            d[key] = (views_25d(cube, self.views, self.offset, self.channels) - self.mean) / self.std
        return d


@dataclass(frozen=True)
class CTAugmentation:
    """Strengths of the per-epoch 3D augmentation of a nodule cube (each transform fires with ``prob``).

    Args:
        flip: flip along each of x, y, z.
        rotate90: 90-degree rotations in each of the three planes.
        rotate_degrees: small affine rotation about each axis, degrees (uniform in ``[-r, r]``).
        scale: relative zoom range of the affine (0.1 = +-10 %). Off by default: nodule size is the strongest
            malignancy cue, and zooming changes it.
        translate_mm: affine shift range in mm (= samples at 1 mm).
        noise_std: Gaussian intensity noise, in units of the windowed ``[0, 1]`` intensity.
        prob: probability of each transform.
    """

    flip: bool = True
    rotate90: bool = True
    rotate_degrees: float = 10.0
    scale: float = 0.0
    translate_mm: float = 2.0
    noise_std: float = 0.02
    prob: float = 0.5


DEFAULT_CT_AUGMENTATION = CTAugmentation()


def nodule_preprocess(
    size_mm: float = 64.0,
    spacing_mm: float = 1.0,
    hu_window: tuple[float, float] = (-1000.0, 400.0),
    radiomics: bool = False,
    default_rescale: Sequence[float] | None = None,
) -> Compose:
    """Deterministic part: load + resample + window -> ``"image"`` float16 ``[1, S, S, S]`` in ``[0, 1]``; with
    ``radiomics``, also ``"features"`` measured on the HU cube before windowing (:class:`NoduleRadiomicsd`).
    ``default_rescale``: see :class:`NodulePatchd`."""
    measure = [NoduleRadiomicsd("image", spacing_mm)] if radiomics else []
    return Compose(
        [
            NodulePatchd("image", size_mm=size_mm, spacing_mm=spacing_mm, default_rescale=default_rescale),
            *measure,
            ScaleIntensityRanged("image", a_min=hu_window[0], a_max=hu_window[1], b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped("image", dtype=torch.float16, track_meta=False),
            EnsureTyped("label", dtype=torch.float32, track_meta=False),
            SelectItemsd(["image", "label", "id", *(["features"] if radiomics else [])]),
        ]
    )


def augmentation_3d(augmentation: CTAugmentation) -> list:
    """The ``Rand*d`` transforms of a ``[1, S, S, S]`` cube, in order."""
    a, p = augmentation, augmentation.prob
    out: list = []
    if a.flip:
        out += [RandFlipd("image", prob=p, spatial_axis=axis) for axis in range(3)]
    if a.rotate90:
        out += [RandRotate90d("image", prob=p, spatial_axes=axes) for axes in ((0, 1), (0, 2), (1, 2))]
    if a.rotate_degrees or a.scale or a.translate_mm:
        radians = np.deg2rad(a.rotate_degrees)
        out.append(RandAffined("image", prob=p, rotate_range=(radians,) * 3, scale_range=(a.scale,) * 3,
                               translate_range=(a.translate_mm,) * 3, padding_mode="border"))
    if a.noise_std:
        out.append(RandGaussianNoised("image", prob=p, std=a.noise_std))
    return out


def nodule_postprocess(
    augmentation: CTAugmentation | None = DEFAULT_CT_AUGMENTATION,
    views: Sequence[str] = ("axial", "coronal", "sagittal"),
    view_channels: str = "planes",
) -> Compose:
    """Per-epoch part: float32, optional 3D augmentation, 2.5D views with ImageNet normalisation.

    Args:
        augmentation: 3D augmentation strengths; ``None`` for evaluation.
        views: planes to cut (see :data:`VIEW_AXES`).
        view_channels: ``"planes"`` or ``"projections"`` (see :func:`views_25d`).

    Returns:
        A Compose giving ``"image"`` float32 ``[views, 3, S, S]``, ``"label"`` ``[1]``, ``"id"``.
    """
    steps: list = [EnsureTyped("image", dtype=torch.float32, track_meta=False)]
    steps += augmentation_3d(augmentation) if augmentation is not None else []
    steps += [Views25Dd("image", views, channels=view_channels), EnsureTyped("image", dtype=torch.float32, track_meta=False)]
    return Compose(steps)
