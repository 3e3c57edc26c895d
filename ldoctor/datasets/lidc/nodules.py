"""Readers' annotations -> nodules: outline geometry, grouping the readers' marks of one nodule, consensus label.

The readers' annotations of the same nodule are grouped as LIDC tools do (pylidc ``Scan.cluster_annotations``:
annotations that touch or lie close are linked, connected components are nodules, a component with more
annotations than readers is split again with a tighter distance). Consensus = mean (or median) malignancy;
protocol: consensus > 3 malignant (1), < 3 benign (0), = 3 excluded (or NaN); nodules >= 3 mm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ldoctor.datasets.lidc.annotations import MAX_READERS, Contour, ReaderAnnotation, ScanInfo

CONSENSUS_METHODS = ("mean", "median")


@dataclass
class AnnotationGeometry:
    """Size and position of one reader's nodule outline.

    Attributes:
        center: ``(column, row, z_mm)`` centroid of the filled outline (pixels, pixels, mm).
        volume_mm3: filled voxels x voxel volume.
        extent_mm: largest in-plane extent (longest chord between two outline points on one slice).
        num_slices: slices with an inclusion outline.
        voxels: set of ``(column, row, z in 0.01 mm)`` keys of the filled voxels (for overlap tests).
    """

    center: np.ndarray
    volume_mm3: float
    extent_mm: float
    num_slices: int
    voxels: set[tuple[int, int, int]]


# ----------------------------------------------------------------------------------------------- geometry


def fill_polygon(points: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a closed pixel outline, outline pixels included (crossing-number test on pixel centres).

    Args:
        points: ``[N, 2]`` ``(x = column, y = row)`` outline points.
        origin: ``(column, row)`` of the mask's top-left pixel.
        shape: ``(rows, columns)`` of the mask.

    Returns:
        bool ``[rows, columns]`` mask.
    """
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    px = (cols + origin[0]).ravel().astype(float)
    py = (rows + origin[1]).ravel().astype(float)
    x0, y0 = points[:, 0].astype(float)[:, None], points[:, 1].astype(float)[:, None]
    x1, y1 = np.roll(x0, -1, axis=0), np.roll(y0, -1, axis=0)
    crosses = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    inside = (np.count_nonzero(crosses & (px < x_cross), axis=0) % 2).astype(bool).reshape(shape)
    on_outline = points.astype(int) - np.asarray(origin)
    keep = (on_outline[:, 0] >= 0) & (on_outline[:, 0] < shape[1]) & (on_outline[:, 1] >= 0)
    keep &= on_outline[:, 1] < shape[0]
    inside[on_outline[keep, 1], on_outline[keep, 0]] = True
    return inside


def z_key(z_mm: float) -> int:
    """Slice key: z in hundredths of a mm, so float positions of the same slice compare equal."""
    return int(round(z_mm * 100))


def rasterise(contours: Sequence[Contour]) -> dict[int, tuple[tuple[int, int], np.ndarray]]:
    """Fill the outlines slice by slice: inclusions united, exclusions cut out.

    Returns:
        ``z_key -> ((column0, row0), bool [rows, columns] mask)`` on the bounding box of the slice's points.
    """
    by_slice: dict[int, list[Contour]] = {}
    for contour in contours:
        by_slice.setdefault(z_key(contour.z_mm), []).append(contour)
    masks = {}
    for key, items in by_slice.items():
        points = np.concatenate([c.points for c in items]).astype(int)
        origin = (int(points[:, 0].min()), int(points[:, 1].min()))
        shape = (int(points[:, 1].max()) - origin[1] + 1, int(points[:, 0].max()) - origin[0] + 1)
        mask = np.zeros(shape, dtype=bool)
        for contour in sorted(items, key=lambda c: not c.inclusion):
            filled = fill_polygon(contour.points, origin, shape)
            mask = mask | filled if contour.inclusion else mask & ~filled
        masks[key] = (origin, mask)
    return masks


def largest_chord(points: np.ndarray, spacing: tuple[float, float]) -> float:
    """Longest distance (mm) between two points of one outline ``[N, 2]`` with ``(column, row)`` spacing."""
    scaled = points.astype(float) * np.asarray(spacing, dtype=float)
    if len(scaled) > 400:
        scaled = scaled[:: int(math.ceil(len(scaled) / 400))]
    return float(np.sqrt(((scaled[:, None, :] - scaled[None, :, :]) ** 2).sum(-1)).max())


def annotation_geometry(annotation: ReaderAnnotation, scan: ScanInfo) -> AnnotationGeometry:
    """Centroid, volume, largest extent and slice count of one reader's outlines."""
    masks = rasterise(annotation.contours)
    voxels: set[tuple[int, int, int]] = set()
    coords = []
    for key, (origin, mask) in masks.items():
        rows, cols = np.nonzero(mask)
        cols, rows = cols + origin[0], rows + origin[1]
        voxels.update(zip(cols.tolist(), rows.tolist(), [key] * len(cols)))
        coords.append(np.c_[cols, rows, np.full(len(cols), key / 100.0)])
    filled = np.concatenate(coords) if coords else np.zeros((0, 3))
    inclusions = [c for c in annotation.contours if c.inclusion]
    if len(filled) == 0:
        points = np.concatenate([c.points for c in annotation.contours])
        center = np.r_[points.mean(0), np.mean([c.z_mm for c in annotation.contours])]
    else:
        center = filled.mean(0)
    voxel_mm3 = scan.pixel_spacing[0] * scan.pixel_spacing[1] * scan.slice_spacing
    return AnnotationGeometry(
        center=center,
        volume_mm3=float(len(voxels) * voxel_mm3),
        extent_mm=max((largest_chord(c.points, scan.pixel_spacing) for c in inclusions), default=0.0),
        num_slices=len({z_key(c.z_mm) for c in inclusions}),
        voxels=voxels,
    )


# ----------------------------------------------------------------------------------------------- grouping


def _components(n: int, linked: np.ndarray) -> list[list[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(linked, 1))):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _too_big(group: list[int], readers: Sequence[str], max_readers: int) -> bool:
    named = [readers[i] for i in group if readers[i]]
    return len(group) > max_readers or len(named) != len(set(named))


def group_annotations(
    geometries: Sequence[AnnotationGeometry],
    scan: ScanInfo,
    readers: Sequence[str] | None = None,
    distance_mm: float = 5.0,
    max_readers: int = MAX_READERS,
) -> list[list[int]]:
    """Group the annotations of one series into nodules.

    Two annotations are linked when their filled outlines share a voxel or their centroids lie within
    ``distance_mm``; nodules are the connected components. A component with more than ``max_readers``
    annotations, or two by the same named reader, is split again with centroid distance only and a
    distance shrunk by 0.8 per round (pylidc shrinks its tolerance the same way).

    Args:
        geometries: one per annotation of the series.
        scan: pixel geometry (converts centroids to mm).
        readers: reader id per annotation ("" = unknown, as in the pylidc database).
        distance_mm: centroid distance that links two annotations.
        max_readers: most annotations one nodule may have.

    Returns:
        Lists of annotation indices, one list per nodule, ordered by their first index.
    """
    n = len(geometries)
    if n == 0:
        return []
    readers = list(readers) if readers is not None else [""] * n
    scale = np.array([scan.pixel_spacing[0], scan.pixel_spacing[1], 1.0])
    centers = np.stack([g.center for g in geometries]) * scale
    distance = np.sqrt(((centers[:, None] - centers[None]) ** 2).sum(-1))
    overlap = np.array([[not geometries[i].voxels.isdisjoint(geometries[j].voxels) for j in range(n)] for i in range(n)])
    groups = _components(n, (distance <= distance_mm) | overlap)
    result = []
    for group in groups:
        tolerance = distance_mm
        parts = [group]
        while any(_too_big(p, readers, max_readers) for p in parts) and tolerance > 0.05:
            tolerance *= 0.8
            sub = distance[np.ix_(group, group)] <= tolerance
            parts = [[group[i] for i in part] for part in _components(len(group), sub)]
        result.extend(parts)
    return sorted(result, key=lambda g: g[0])


# ---------------------------------------------------------------------------------------------- consensus


def consensus_malignancy(ratings: Sequence[int], method: str = "mean") -> float:
    """Mean or median of the readers' malignancy ratings (1-5)."""
    if method not in CONSENSUS_METHODS:
        raise ValueError(f"consensus must be one of {CONSENSUS_METHODS}, got {method!r}")
    if not ratings:
        raise ValueError("a nodule needs at least one malignancy rating")
    return float(np.mean(ratings) if method == "mean" else np.median(ratings))


def malignancy_label(consensus: float, positive_above: float = 3.0, negative_below: float = 3.0) -> float:
    """1.0 when ``consensus > positive_above``, 0.0 when ``< negative_below``, NaN in between (ambiguous)."""
    if consensus > positive_above:
        return 1.0
    if consensus < negative_below:
        return 0.0
    return math.nan


def build_nodule_manifest(
    annotations: Iterable[ReaderAnnotation],
    scans: dict[str, ScanInfo],
    consensus: str = "mean",
    positive_above: float = 3.0,
    negative_below: float = 3.0,
    exclude_ambiguous: bool = True,
    min_diameter_mm: float = 3.0,
    distance_mm: float = 5.0,
    max_readers: int = MAX_READERS,
) -> list[dict]:
    """Group readers' annotations into nodules and label them.

    Args:
        annotations: reader annotations of any number of series.
        scans: ``series_uid -> ScanInfo`` for every series the annotations name.
        consensus: ``"mean"`` or ``"median"`` of the malignancy ratings.
        positive_above: consensus above this is malignant (label 1).
        negative_below: consensus below this is benign (label 0).
        exclude_ambiguous: drop nodules between the two thresholds; False keeps them with label NaN.
        min_diameter_mm: drop nodules whose mean largest extent over readers is smaller.
        distance_mm: centroid distance linking two annotations (see :func:`group_annotations`).
        max_readers: most annotations per nodule.

    Returns:
        One dict per nodule: ``id``, ``patient_id``, ``series_uid``, ``nodule_index``, ``num_readers``,
        ``malignancy`` (list of ratings), ``texture`` (list), ``consensus`` (float), ``label`` (1.0 / 0.0 /
        NaN), ``center_px`` (``[column, row]``), ``center_z_mm``, ``diameter_mm``, ``volume_mm3`` and
        ``num_slices`` (means over readers), ``annotation_ids``, ``reader_volumes_mm3`` (each reader's outline
        volume, in ``annotation_ids`` order), ``union_volume_mm3`` (voxels inside any reader's outline),
        ``pixel_spacing_mm`` (``[column, row]``) and ``slice_spacing_mm`` (the scan's grid).

    Raises:
        KeyError: an annotation names a series missing from ``scans``.
    """
    by_series: dict[str, list[ReaderAnnotation]] = {}
    for annotation in annotations:
        if annotation.series_uid not in scans:
            raise KeyError(
                f"annotation {annotation.annotation_id or annotation.nodule_id!r} names series "
                f"{annotation.series_uid}, which is not among the {len(scans)} known series"
            )
        by_series.setdefault(annotation.series_uid, []).append(annotation)
    records = []
    for series_uid, items in by_series.items():
        scan = scans[series_uid]
        geometries = [annotation_geometry(a, scan) for a in items]
        groups = group_annotations(geometries, scan, [a.reader for a in items], distance_mm, max_readers)
        for index, group in enumerate(groups):
            record = _nodule_record(scan, index, [items[i] for i in group], [geometries[i] for i in group])
            record["consensus"] = consensus_malignancy(record["malignancy"], consensus)
            record["label"] = malignancy_label(record["consensus"], positive_above, negative_below)
            if record["diameter_mm"] < min_diameter_mm or (exclude_ambiguous and math.isnan(record["label"])):
                continue
            records.append(record)
    return records


def _nodule_record(
    scan: ScanInfo, index: int, members: list[ReaderAnnotation], geometries: list[AnnotationGeometry]
) -> dict:
    center = np.mean([g.center for g in geometries], axis=0)
    patient = scan.patient_id or members[0].patient_id
    voxel_mm3 = scan.pixel_spacing[0] * scan.pixel_spacing[1] * scan.slice_spacing
    return {
        "id": f"{patient}/{scan.series_uid}/{index}",
        "patient_id": patient,
        "series_uid": scan.series_uid,
        "nodule_index": index,
        "num_readers": len(members),
        "malignancy": [a.malignancy for a in members],
        "texture": [int(a.ratings.get("texture", 0)) for a in members],
        "center_px": [float(center[0]), float(center[1])],
        "center_z_mm": float(center[2]),
        "diameter_mm": float(np.mean([g.extent_mm for g in geometries])),
        "volume_mm3": float(np.mean([g.volume_mm3 for g in geometries])),
        "num_slices": float(np.mean([g.num_slices for g in geometries])),
        "annotation_ids": [a.annotation_id for a in members],
        "reader_volumes_mm3": [g.volume_mm3 for g in geometries],
        "union_volume_mm3": float(len(set().union(*(g.voxels for g in geometries))) * voxel_mm3),
        "pixel_spacing_mm": [float(s) for s in scan.pixel_spacing],
        "slice_spacing_mm": float(scan.slice_spacing),
    }
