"""One patient's files -> a validated :class:`Case`: the inputs of a report, any subset of three.

A case folder holds what a user has, in the formats they have it::

    CASE_DIR/
      ct/                      a CT: a DICOM series folder, or ct.nii / ct.nii.gz (or one *.nii[.gz] in ct/)
      candidates.csv           the nodules to assess, LUNA16 convention: coordX, coordY, coordZ (world mm,
                               the scanner's LPS frame of the DICOM headers) and optionally diameter_mm
                               (annotations.csv is read the same way; a seriesuid column is ignored, the case
                               has one CT); or, with a DICOM series, the LIDC reader XML (*.xml) beside it:
                               the nodules its outlines describe (their centre and size only)
      radiograph.png | .dcm    a chest radiograph: PNG (8/16-bit grey, RGB) or DICOM CR/DX (MONOCHROME1 too)
      history.json             the admission history (below); or mimic/ with the MIMIC-III tables of this patient
                               (ADMISSIONS, DIAGNOSES_ICD, PROCEDURES_ICD, PRESCRIPTIONS, .csv or .csv.gz)

``history.json`` (documented, small)::

    {"admissions": [                                        oldest first; the last is the current admission
       {"diagnoses": ["4019", "25000"], "procedures": ["3893"], "drugs": ["N02B", "A02B"]},
       {"diagnoses": ["41401"], "procedures": ["3606"]}     the current one: its drugs are what is recommended
    ]}

Codes are ICD-9 without dots (as MIMIC-III stores them), drugs ATC level 3. Bad or partial input never stops
the other tasks: each problem is recorded in :attr:`Case.problems` (naming the file and what was expected) and
that input is left out; a case with no usable input at all raises :class:`~ldoctor.errors.BadInput`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ldoctor.errors import BadInput, BadInputLog
from ldoctor.io.ct import dicom_files
from ldoctor.io.tables import read_csv

CANDIDATE_FILES = ("candidates.csv", "annotations.csv")
RADIOGRAPH_NAMES = ("radiograph.png", "radiograph.dcm", "radiograph.dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Nodule:
    """A nodule candidate: centre ``[x, y, z]`` in world mm (LPS) and the stated diameter (mm) if any."""

    center_mm: list[float]
    diameter_mm: float | None = None
    diameter_source: str | None = None


@dataclass
class Case:
    """A case's usable inputs; ``None`` / empty where the case has none.

    Attributes:
        folder: the case folder.
        ct: a DICOM series folder or a NIfTI file.
        nodules: the candidates to assess on ``ct``.
        radiograph: a PNG or DICOM file.
        history: admissions oldest first, each ``{"diagnoses", "procedures", "drugs"}`` lists of codes; the
            last is the current one.
        problems: ``(input, message)`` for every input left out.
    """

    folder: Path
    ct: Path | None = None
    nodules: list[Nodule] = field(default_factory=list)
    radiograph: Path | None = None
    history: list[dict[str, list[str]]] | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        """The tasks' inputs present: ``"ct"`` (with nodules), ``"radiograph"``, ``"history"``."""
        return [name for name, ok in (("ct", self.ct is not None and bool(self.nodules)),
                                      ("radiograph", self.radiograph is not None),
                                      ("history", self.history is not None)) if ok]


def read_case(folder: str | Path) -> Case:
    """Find and validate a case folder's inputs (module docstring).

    Raises:
        FileNotFoundError: the folder does not exist.
        BadInput: no usable input at all (the problems of each are listed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: case folder not found")
    case = Case(folder)
    _read_ct(case)
    _read_radiograph(case)
    _read_history(case)
    if not case.inputs:
        found = "; ".join(f"{what}: {message}" for what, message in case.problems) or "nothing found"
        raise BadInput(f"{folder}: no usable input (expected ct/ with candidates.csv, radiograph.png|.dcm, or "
                       f"history.json / mimic/): {found}")
    return case


def _read_ct(case: Case) -> None:
    folder = case.folder
    nifti = [p for p in sorted(folder.glob("ct*")) + sorted((folder / "ct").glob("*"))
             if p.is_file() and p.name.endswith(NIFTI_SUFFIXES)]
    series = folder / "ct" if (folder / "ct").is_dir() and dicom_files(folder / "ct") else None
    if len(nifti) + (series is not None) > 1:
        case.problems.append(("ct", f"{folder}: more than one CT ({', '.join(p.name for p in nifti)}"
                                    f"{', ct/ DICOM series' if series else ''}); expected one"))
        return
    ct = series or (nifti[0] if nifti else None)
    candidates = [folder / n for n in CANDIDATE_FILES if (folder / n).is_file()]
    xml = series is not None and not candidates and _has_lidc_xml(folder, case)
    if ct is None:
        if candidates:
            case.problems.append(("ct", f"{candidates[0]}: nodule candidates but no CT (expected ct/ with a DICOM "
                                        "series, or ct.nii[.gz])"))
        return
    if not candidates and not xml:
        case.problems.append(("nodules", f"{folder}: a CT but no candidates.csv / annotations.csv (LUNA16: "
                                         "coordX, coordY, coordZ in mm, optional diameter_mm) and no LIDC XML; no "
                                         "nodule assessed"))
        return
    try:
        case.nodules = read_candidates(candidates[0]) if candidates else read_lidc_nodules(folder)
        case.ct = ct
    except (BadInput, ValueError) as err:
        case.problems.append(("nodules", str(err)))


def _has_lidc_xml(folder: Path, case: Case) -> bool:
    from ldoctor.datasets.lidc.xml_files import is_lidc_xml  # noqa: PLC0415

    try:
        return any(is_lidc_xml(p) for p in [*folder.glob("*.xml"), *(folder / "ct").glob("*.xml")])
    except BadInput as err:
        case.problems.append(("nodules", str(err)))
        return False


def read_lidc_nodules(folder: Path) -> list[Nodule]:
    """The nodules (3 mm or more) of LIDC reader XML beside the ``ct/`` DICOM series: the readers' outlines grouped
    into nodules as for training (:class:`~ldoctor.datasets.lidc.DicomNodules`), their centre and mean largest
    extent. Only where the nodules are and their size are taken; the readers' ratings never reach the model.

    Raises:
        BadInput: the XML or the series (:mod:`ldoctor.datasets.lidc.records`).
    """
    from ldoctor.datasets.lidc.records import nodule_records  # noqa: PLC0415

    protocol = {"consensus": "mean", "positive_above": 3.0, "negative_below": 3.0, "exclude_ambiguous": False,
                "min_diameter_mm": 3.0}
    try:
        records = nodule_records(folder, None, protocol, BadInputLog())
    except BadInput as err:
        if "no labelled nodule" not in str(err):
            raise
        records = []
    if not records:
        raise BadInput(f"{folder}: the LIDC XML outlines no nodule of 3 mm or more; expected reader outlines or a "
                       "candidates.csv")
    return [Nodule([float(v) for v in r["center_mm"]], float(r["diameter_mm"]), "LIDC readers' outlines")
            for r in records]


def read_candidates(path: Path) -> list[Nodule]:
    """LUNA16-style candidates: ``coordX, coordY, coordZ`` (mm) and optionally ``diameter_mm`` per row.

    Raises:
        BadInput: missing columns, non-numeric or non-finite coordinates, a negative diameter, no rows; naming
            the file and line.
    """
    frame = read_csv(path, "a nodule candidate list (coordX, coordY, coordZ in mm, optional diameter_mm)", dtype=str,
                     keep_default_na=False)
    columns = {c.strip().lower(): c for c in frame.columns}
    missing = [c for c in ("coordx", "coordy", "coordz") if c not in columns]
    if missing:
        raise BadInput(f"{path}: no column {missing} (has {list(frame.columns)}); expected coordX, coordY, coordZ "
                       "in mm (LUNA16 convention) and optionally diameter_mm")
    nodules = []
    for line, row in enumerate(frame.to_dict("records"), start=2):
        try:
            center = [float(row[columns[c]]) for c in ("coordx", "coordy", "coordz")]
            text = str(row[columns["diameter_mm"]]).strip() if "diameter_mm" in columns else ""
            diameter = float(text) if text else None
        except ValueError as err:
            raise BadInput(f"{path} line {line}: {err}; expected numbers (mm)") from None
        if not np.all(np.isfinite(center)) or (diameter is not None and not (np.isfinite(diameter) and
                                                                            diameter >= 0)):
            raise BadInput(f"{path} line {line}: coordinates {center}, diameter {diameter}; expected finite "
                           "mm and a diameter >= 0")
        nodules.append(Nodule(center, diameter, "candidate list" if diameter is not None else None))
    if not nodules:
        raise BadInput(f"{path}: no candidate rows; expected one row per nodule")
    return nodules


def _read_radiograph(case: Case) -> None:
    found = [case.folder / n for n in RADIOGRAPH_NAMES if (case.folder / n).is_file()]
    if len(found) > 1:
        case.problems.append(("radiograph", f"{case.folder}: {', '.join(p.name for p in found)}; expected one "
                                            "radiograph"))
        return
    if found:
        from ldoctor.io.radiograph import check_radiograph_file  # noqa: PLC0415

        try:
            check_radiograph_file(found[0])
            case.radiograph = found[0]
        except (BadInput, ValueError, OSError) as err:
            case.problems.append(("radiograph", str(err)))


def _read_history(case: Case) -> None:
    path, mimic = case.folder / "history.json", case.folder / "mimic"
    if path.is_file() and mimic.is_dir():
        case.problems.append(("history", f"{case.folder}: both history.json and mimic/; expected one"))
        return
    try:
        if path.is_file():
            case.history = read_history_json(path)
        elif mimic.is_dir():
            case.history = read_history_mimic(mimic)
    except (BadInput, ValueError, OSError) as err:
        case.problems.append(("history", str(err)))


def read_history_json(path: Path) -> list[dict[str, list[str]]]:
    """``history.json`` (module docstring) -> admissions oldest first.

    Raises:
        BadInput: not JSON, no ``admissions`` list, an admission without diagnoses and procedures, a code that is
            not a string; naming the file and the admission.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not JSON ({err}); expected {{\"admissions\": [...]}}") from None
    admissions = data.get("admissions") if isinstance(data, dict) else None
    if not isinstance(admissions, list) or not admissions:
        raise BadInput(f"{path}: expected {{\"admissions\": [...]}} with at least one admission")
    history = []
    for n, admission in enumerate(admissions, start=1):
        if not isinstance(admission, dict):
            raise BadInput(f"{path}: admission {n} is {type(admission).__name__}; expected an object")
        entry = {}
        for key in ("diagnoses", "procedures", "drugs"):
            codes = admission.get(key, [])
            if not isinstance(codes, list) or not all(isinstance(c, str) and c.strip() for c in codes):
                raise BadInput(f"{path}: admission {n} {key!r} must be a list of non-empty code strings")
            entry[key] = [c.strip().replace(".", "") if key != "drugs" else c.strip() for c in codes]
        if not entry["diagnoses"] and not entry["procedures"]:
            raise BadInput(f"{path}: admission {n} has no diagnoses and no procedures; expected codes")
        history.append(entry)
    return history


def read_history_mimic(folder: Path) -> list[dict[str, list[str]]]:
    """One patient's MIMIC-III tables -> admissions oldest first, drugs as ATC-3 through the shipped NDC map (or
    ``mimic/ndc_to_atc3.csv`` when the case has its own).

    The tables are read as for training (:func:`ldoctor.datasets.mimic.records.read_mimic_admissions`), so the cohort
    rule applies: admissions without a diagnosis, a procedure and a mapped drug are left out (with a warning
    counting them); the last admission kept is the current one.

    Raises:
        BadInput: the tables' problems, naming file and line; more than one patient.
    """
    from ldoctor.datasets.mimic.records import DEMO_NDC_MAP, read_mimic_admissions  # noqa: PLC0415

    own_map = folder / "ndc_to_atc3.csv"
    records, _ = read_mimic_admissions(folder, own_map if own_map.is_file() else DEMO_NDC_MAP, BadInputLog())
    patients = {r["subject_id"] for r in records}
    if len(patients) != 1:
        raise BadInput(f"{folder}: {len(patients)} patients in the MIMIC-III tables; expected one patient's rows")
    return [{"diagnoses": r["diagnoses"], "procedures": r["procedures"], "drugs": r["drugs"]} for r in records]
