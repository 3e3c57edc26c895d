"""MIMIC-III CSVs -> validated admission records for the ``drug`` task.

Reads ``ADMISSIONS``, ``DIAGNOSES_ICD``, ``PROCEDURES_ICD`` and ``PRESCRIPTIONS`` (``.csv`` or ``.csv.gz``;
column names in any case: the demo release is lower-case, the full release upper-case), maps each
prescription's NDC to its ATC level-3 class through a mapping CSV (``ndc,atc3``), and returns one record per
kept admission::

    {"subject_id": "10006", "hadm_id": "142345", "admittime": "2164-10-23T21:09:00",
     "diagnoses": ["99591", ...], "procedures": ["3893", ...], "drugs": ["A02B", ...]}

Records are ordered by patient, then admission time. An admission is kept when it has at least one diagnosis,
one procedure and one mapped drug (the SafeDrug cohort rule, Yang et al., IJCAI 2021); the admissions it leaves
out are counted by reason in ``MimicStats`` and reported with a warning. Unmapped NDCs are
counted in ``MimicStats`` and reported with a warning, never dropped silently. An NDC of ``0`` or an empty NDC
means "no NDC" in MIMIC-III (compounded or non-formulary items) and is counted separately.

A table present twice (``.csv`` and ``.csv.gz``) is refused, naming both files. Bad input fails here, before any
training, with the file, the line and what was expected; a
:class:`~ldoctor.errors.BadInputLog` with ``skip_bad`` skips and counts bad rows instead.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from lightning.pytorch.utilities import rank_zero_warn

from ldoctor.errors import BadInput, BadInputLog
from ldoctor.io.tables import read_csv_columns
from ldoctor.tasks import TaskSpec

log = logging.getLogger(__name__)

#: The shipped MIMIC-III Clinical Database Demo v1.4 tables and the NDC -> ATC-3 map (see its README.md).
DEMO_DIR = Path(__file__).resolve().parents[2] / "demo_data" / "mimic3-demo"
DEMO_NDC_MAP = DEMO_DIR / "ndc_to_atc3.csv"

#: table name -> the columns we need (lower case).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "ADMISSIONS": ("subject_id", "hadm_id", "admittime"),
    "DIAGNOSES_ICD": ("subject_id", "hadm_id", "icd9_code"),
    "PROCEDURES_ICD": ("subject_id", "hadm_id", "icd9_code"),
    "PRESCRIPTIONS": ("subject_id", "hadm_id", "ndc"),
}
NDC_PATTERN = re.compile(r"^\d{11}$")
ATC3_PATTERN = re.compile(r"^[A-Z]\d{2}[A-Z]$")
NO_NDC = ("", "0")
#: Prefixes of the shared code vocabulary: diagnoses and procedures share the ICD-9 number space.
DIAGNOSIS_PREFIX, PROCEDURE_PREFIX = "D:", "P:"
#: Prefix of the drugs of EARLIER admissions in the code vocabulary (``history_drugs``; never the current one).
MEDICATION_PREFIX = "M:"
#: First entry of every code vocabulary: codes unseen in training map here (index 1; 0 is padding).
UNKNOWN_CODE = "<unk>"


@dataclass
class MimicStats:
    """What the reader kept and dropped; logged, asserted in tests and printed by the benchmark.

    ``admissions_in_file - admissions_with_all`` admissions were left out by the cohort rule; ``no_diagnosis``,
    ``no_procedure`` and ``no_mapped_drug`` count them by what they lack (one admission may lack several). The
    reader warns with these counts whenever it leaves an admission out.
    """

    admissions_in_file: int = 0
    prescription_rows: int = 0
    no_ndc_rows: int = 0
    mapped_rows: int = 0
    unmapped_rows: int = 0
    unmapped_ndcs: int = 0
    empty_code_rows: int = 0
    admissions_with_all: int = 0
    no_diagnosis: int = 0
    no_procedure: int = 0
    no_mapped_drug: int = 0
    patients: int = 0
    admissions: int = 0
    drug_classes: int = 0

    @property
    def mapped_share(self) -> float:
        """Share of prescription rows with an NDC that the map resolves to an ATC-3 class."""
        with_ndc = self.mapped_rows + self.unmapped_rows
        return self.mapped_rows / with_ndc if with_ndc else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "mapped_share": self.mapped_share}


def drug_task(drug_vocabulary: Sequence[str], code_vocabulary: Sequence[str]) -> TaskSpec:
    """``drug``: medication classes (e.g. ATC level 3) for an admission given the patient's history.

    Args:
        drug_vocabulary: output class names, e.g. ``["A02B", "B01A", ...]``.
        code_vocabulary: input codes, e.g. ``["<unk>", "D:4019", "P:3893", ...]`` (diagnoses ``D:``, procedures
            ``P:``, earlier admissions' drugs ``M:``).
    """
    return TaskSpec(name="drug", kind="multilabel", num_outputs=len(drug_vocabulary),
                    class_names=list(drug_vocabulary), input_key="codes", code_vocabulary=list(code_vocabulary))


# ----------------------------------------------------------------------------------------------- files
def find_table(mimic_dir: str | Path, table: str) -> Path:
    """Path of ``TABLE.csv`` / ``TABLE.csv.gz`` (either case) in ``mimic_dir``.

    Raises:
        FileNotFoundError: naming the folder and every name tried.
        BadInput: two different files of the table (e.g. ``TABLE.csv`` and ``TABLE.csv.gz``), naming both: which
            one holds the data meant is not for the reader to guess.
    """
    folder = Path(mimic_dir)
    tried = [f"{name}{ext}" for name in (table, table.lower()) for ext in (".csv", ".csv.gz")]
    found: list[Path] = []
    for name in tried:
        path = folder / name
        if path.is_file() and not any(path.samefile(f) for f in found):  # one file under two names on a
            found.append(path)  # case-insensitive file system is one file
    if len(found) > 1:
        raise BadInput(f"{found[0]} and {found[1]}: two files of the MIMIC-III table {table} in {folder}; expected "
                       "one (.csv or .csv.gz): remove the other")
    if found:
        return found[0]
    raise FileNotFoundError(f"{folder}: no MIMIC-III table {table} (tried {', '.join(tried)}); check data.mimic_dir")


# ----------------------------------------------------------------------------------------------- NDC map
def load_ndc_map(path: str | Path) -> dict[str, str]:
    """Read an NDC -> ATC-3 mapping CSV with columns ``ndc`` and ``atc3`` (any case).

    Repeated NDCs that agree are merged; repeated NDCs that disagree are an error.

    Returns:
        ``{ndc (11 digits): atc3 (e.g. "A02B")}``.

    Raises:
        ValueError: malformed NDC or ATC-3 value, or one NDC mapped to two classes (both lines named).
    """
    path = Path(path)
    frame = read_csv_columns(path, ("ndc", "atc3"), "the NDC -> ATC-3 map")
    mapping: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for ndc, atc3, line in frame.itertuples(index=False):
        if not NDC_PATTERN.match(ndc):
            raise BadInput(f"{path} line {line}: malformed NDC {ndc!r}; expected 11 digits")
        if not ATC3_PATTERN.match(atc3):
            raise BadInput(f"{path} line {line}: malformed ATC-3 class {atc3!r}; expected e.g. 'A02B'")
        if ndc in mapping and mapping[ndc] != atc3:
            raise BadInput(
                f"{path}: NDC {ndc} maps to {mapping[ndc]!r} on line {first_line[ndc]} and to {atc3!r} "
                f"on line {line}; an NDC must map to one ATC-3 class"
            )
        mapping.setdefault(ndc, atc3)
        first_line.setdefault(ndc, line)
    if not mapping:
        raise BadInput(f"{path}: the NDC -> ATC-3 map has no rows")
    return mapping


# ----------------------------------------------------------------------------------------------- tables
def _read_admissions(mimic_dir: Path, stats: MimicStats) -> tuple[dict[str, tuple[str, pd.Timestamp]], Path]:
    path = find_table(mimic_dir, "ADMISSIONS")
    frame = read_csv_columns(path, TABLE_COLUMNS["ADMISSIONS"], "the MIMIC-III table ADMISSIONS")
    times = pd.to_datetime(frame["admittime"], errors="coerce", format="mixed")
    admissions: dict[str, tuple[str, pd.Timestamp]] = {}
    for (subject, hadm, _, line), time in zip(frame.itertuples(index=False), times):
        if not (subject.isdigit() and hadm.isdigit()) or pd.isna(time):
            raise BadInput(
                f"{path} line {line}: expected integer subject_id and hadm_id and a date-time admittime, "
                f"got {subject!r}, {hadm!r}, {frame['admittime'].iat[line - 2]!r}"
            )
        if hadm in admissions:
            raise BadInput(f"{path} line {line}: hadm_id {hadm} appears twice")
        admissions[hadm] = (subject, time)
    stats.admissions_in_file = len(admissions)
    return admissions, path


def _checked_rows(
    mimic_dir: Path,
    table: str,
    admissions: dict[str, tuple[str, pd.Timestamp]],
    admissions_path: Path,
    bad: BadInputLog,
) -> tuple[pd.DataFrame, Path]:
    """Rows of ``table`` whose ``hadm_id`` is in ADMISSIONS with the same ``subject_id``."""
    path = find_table(mimic_dir, table)
    frame = read_csv_columns(path, TABLE_COLUMNS[table], f"the MIMIC-III table {table}")
    known = frame["hadm_id"].isin(admissions.keys())
    for subject, hadm, line in frame.loc[~known, ["subject_id", "hadm_id", "line"]].itertuples(index=False):
        bad.report(f"{table}:unknown_hadm_id",
                   f"{path} line {line}: hadm_id {hadm!r} (subject_id {subject}) is not in {admissions_path}")
    frame = frame[known]
    owner = frame["hadm_id"].map(lambda h: admissions[h][0])
    mismatch = frame["subject_id"] != owner
    for subject, hadm, line in frame.loc[mismatch, ["subject_id", "hadm_id", "line"]].itertuples(index=False):
        bad.report(f"{table}:subject_mismatch", f"{path} line {line}: subject_id {subject} differs from hadm_id "
                                                f"{hadm}'s subject_id {admissions[hadm][0]} in {admissions_path}")
    return frame[~mismatch], path


def _codes_by_admission(frame: pd.DataFrame, stats: MimicStats) -> dict[str, list[str]]:
    """``{hadm_id: ICD-9 codes in file order, deduplicated}``; empty codes are counted and left out."""
    empty = frame["icd9_code"] == ""
    stats.empty_code_rows += int(empty.sum())
    codes: dict[str, list[str]] = {}
    for hadm, code in frame.loc[~empty, ["hadm_id", "icd9_code"]].itertuples(index=False):
        bucket = codes.setdefault(hadm, [])
        if code not in bucket:
            bucket.append(code)
    return codes


def _drugs_by_admission(
    frame: pd.DataFrame, path: Path, ndc_map: dict[str, str], bad: BadInputLog, stats: MimicStats
) -> dict[str, list[str]]:
    """``{hadm_id: ATC-3 classes in file order, deduplicated}``; counts rows without NDC and unmapped NDCs."""
    stats.prescription_rows = len(frame)
    no_ndc = frame["ndc"].isin(NO_NDC)
    stats.no_ndc_rows = int(no_ndc.sum())
    frame = frame[~no_ndc]
    malformed = ~frame["ndc"].str.fullmatch(r"\d{11}")
    for ndc, line in frame.loc[malformed, ["ndc", "line"]].itertuples(index=False):
        bad.report("PRESCRIPTIONS:malformed_ndc",
                   f"{path} line {line}: malformed NDC {ndc!r}; expected 11 digits, or empty / 0 for none")
    frame = frame[~malformed]
    atc3 = frame["ndc"].map(ndc_map)
    unmapped = atc3.isna()
    stats.unmapped_rows = int(unmapped.sum())
    stats.unmapped_ndcs = int(frame.loc[unmapped, "ndc"].nunique())
    stats.mapped_rows = int((~unmapped).sum())
    drugs: dict[str, list[str]] = {}
    for hadm, cls in zip(frame.loc[~unmapped, "hadm_id"], atc3[~unmapped]):
        bucket = drugs.setdefault(hadm, [])
        if cls not in bucket:
            bucket.append(cls)
    return drugs


# ----------------------------------------------------------------------------------------------- records
def read_mimic_admissions(
    mimic_dir: str | Path, ndc_map_path: str | Path, bad: BadInputLog | None = None
) -> tuple[list[dict], MimicStats]:
    """All admissions with at least one diagnosis, one procedure and one mapped drug, ordered by patient
    and admission time (no top-k or minimum-admission filter yet; see ``filter_admissions``).

    Args:
        mimic_dir: folder with the four MIMIC-III tables.
        ndc_map_path: NDC -> ATC-3 CSV (``load_ndc_map``).
        bad: raises at the first bad row (default), or counts and skips it.

    Returns:
        records (see the module docstring) and the reading statistics.
    """
    mimic_dir, stats, bad = Path(mimic_dir), MimicStats(), bad or BadInputLog(source=f"MIMIC-III {mimic_dir}")
    ndc_map = load_ndc_map(ndc_map_path)
    admissions, adm_path = _read_admissions(mimic_dir, stats)
    tables = {
        t: _checked_rows(mimic_dir, t, admissions, adm_path, bad)
        for t in ("DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS")
    }
    diagnoses = _codes_by_admission(tables["DIAGNOSES_ICD"][0], stats)
    procedures = _codes_by_admission(tables["PROCEDURES_ICD"][0], stats)
    drugs = _drugs_by_admission(*tables["PRESCRIPTIONS"], ndc_map, bad, stats)
    if stats.unmapped_rows:
        rank_zero_warn(
            f"{stats.unmapped_rows} of {stats.unmapped_rows + stats.mapped_rows} prescription rows with an "
            f"NDC ({stats.unmapped_ndcs} distinct NDCs) have no ATC-3 class in {ndc_map_path}; they are left "
            f"out of the drug sets (mapped share {stats.mapped_share:.1%})"
        )
    bad.summary()
    kept = sorted(
        set(diagnoses) & set(procedures) & set(drugs),
        key=lambda h: (int(admissions[h][0]), admissions[h][1], int(h)),
    )
    stats.admissions_with_all = len(kept)
    _warn_dropped(admissions, diagnoses, procedures, drugs, stats, mimic_dir)
    records = [
        {
            "subject_id": admissions[h][0],
            "hadm_id": h,
            "admittime": admissions[h][1].isoformat(),
            "diagnoses": diagnoses[h],
            "procedures": procedures[h],
            "drugs": drugs[h],
        }
        for h in kept
    ]
    return records, stats


def _warn_dropped(admissions: dict, diagnoses: dict, procedures: dict, drugs: dict, stats: MimicStats,
                  mimic_dir: Path) -> None:
    """Count the admissions the cohort rule leaves out, by reason, in ``stats``, and warn with the counts."""
    stats.no_diagnosis = sum(h not in diagnoses for h in admissions)
    stats.no_procedure = sum(h not in procedures for h in admissions)
    stats.no_mapped_drug = sum(h not in drugs for h in admissions)
    dropped = [h for h in admissions if h not in diagnoses or h not in procedures or h not in drugs]
    if dropped:
        rank_zero_warn(
            f"MIMIC-III {mimic_dir}: {len(dropped)} of {len(admissions)} admissions left out by the cohort rule "
            f"(at least one diagnosis, one procedure and one mapped drug): {stats.no_diagnosis} without a "
            f"diagnosis, {stats.no_procedure} without a procedure, {stats.no_mapped_drug} without a mapped drug "
            f"(an admission may lack several; e.g. hadm_id {dropped[0]})"
        )


def filter_admissions(
    records: list[dict], top_k_drugs: int | None = None, min_admissions: int = 1, source: str = "records"
) -> list[dict]:
    """Keep the ``top_k_drugs`` most frequent drug classes (ties broken by name), drop admissions left
    without drugs, then drop patients with fewer than ``min_admissions`` admissions.

    Raises:
        ValueError: nothing is left; the message gives the count after every step.
    """
    counts = [f"{len(records)} admissions with diagnoses, procedures and mapped drugs"]
    if top_k_drugs is not None:
        if top_k_drugs < 1:
            raise ValueError(f"top_k_drugs must be >= 1 or None, got {top_k_drugs}")
        frequency = Counter(d for r in records for d in r["drugs"])
        keep = {d for d, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k_drugs]}
        records = [{**r, "drugs": [d for d in r["drugs"] if d in keep]} for r in records]
        records = [r for r in records if r["drugs"]]
        counts.append(f"{len(records)} with a drug among the top {top_k_drugs}")
    per_patient = Counter(r["subject_id"] for r in records)
    records = [r for r in records if per_patient[r["subject_id"]] >= min_admissions]
    counts.append(f"{len(records)} of patients with >= {min_admissions} admissions")
    if not records:
        raise BadInput(f"{source}: no admission left after filtering ({'; '.join(counts)})")
    return records


def group_by_patient(records: Iterable[dict]) -> dict[str, list[dict]]:
    """``{subject_id: that patient's admission records in time order}`` (input order is kept)."""
    patients: dict[str, list[dict]] = {}
    for record in records:
        patients.setdefault(record["subject_id"], []).append(record)
    return patients


# ----------------------------------------------------------------------------------------------- samples
def admission_codes(record: dict, with_drugs: bool = False) -> list[str]:
    """The admission's codes in the shared vocabulary's notation: ``D:<icd9>``, ``P:<icd9>`` and, with
    ``with_drugs``, the drugs it was given as ``M:<atc3>`` (used for earlier admissions only)."""
    codes = [DIAGNOSIS_PREFIX + c for c in record["diagnoses"]]
    codes += [PROCEDURE_PREFIX + c for c in record["procedures"]]
    if with_drugs:
        codes += [MEDICATION_PREFIX + d for d in record["drugs"]]
    return codes


def build_vocabularies(
    train_records: Iterable[dict], drug_records: Iterable[dict], history_drugs: bool = False
) -> tuple[list[str], list[str]]:
    """Code vocabulary from the training admissions, drug vocabulary from ``drug_records``.

    The code vocabulary starts with ``UNKNOWN_CODE``; codes first seen outside training map to it. The drug
    vocabulary is the label space and comes from the whole filtered cohort (as SafeDrug's ``med_voc``), so a
    test drug never seen in training still counts as a miss instead of vanishing from the label. With
    ``history_drugs`` the training drugs enter the code vocabulary as ``M:<atc3>``.

    Returns:
        ``(drug_vocabulary, code_vocabulary)``, both sorted (after ``UNKNOWN_CODE``).
    """
    codes = sorted({c for r in train_records for c in admission_codes(r, history_drugs)})
    drugs = sorted({d for r in drug_records for d in r["drugs"]})
    return drugs, [UNKNOWN_CODE, *codes]


def patient_samples(
    admissions: Sequence[dict], max_history: int | None = None, history_drugs: bool = False
) -> list[dict]:
    """One sample per admission of one patient: that admission's drugs given the admissions so far.

    Args:
        admissions: one patient's admission records in time order.
        max_history: keep at most this many admissions per sample (the current one included).
        history_drugs: add the drugs of the earlier admissions to their codes (``M:<atc3>``), as GAMENet and
            COGNet feed medication history; the current admission never shows its own drugs.

    Returns:
        dicts with ``id`` (``"<subject_id>/<hadm_id>"``), ``hadm_id``, ``history`` (list of code lists, oldest
        first, the current admission last; at most ``max_history`` admissions) and ``drugs``.
    """
    samples = []
    for i, record in enumerate(admissions):
        start = 0 if max_history is None else max(0, i + 1 - max_history)
        samples.append(
            {
                "id": f"{record['subject_id']}/{record['hadm_id']}",
                "hadm_id": record["hadm_id"],
                "history": [admission_codes(r, history_drugs) for r in admissions[start:i]] + [admission_codes(record)],
                "drugs": list(record["drugs"]),
            }
        )
    return samples
