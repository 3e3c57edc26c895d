"""Synthetic MIMIC-III data in the real file formats, with a learnable diagnosis -> drug structure.

Two writers for tests and benchmarks:

- ``write_synthetic_mimic``: ``ADMISSIONS``, ``DIAGNOSES_ICD``, ``PROCEDURES_ICD``, ``PRESCRIPTIONS`` CSVs
  (lower- or upper-case headers, plain or gzip) plus an ``ndc_to_atc3.csv`` map. Each diagnosis code
  code calls for a fixed small set of ATC-3 classes; an admission is prescribed the union of its diagnoses'
  classes (each given through one of two NDCs), plus rows with NDC ``0`` and an unmapped NDC, so a model that
  reads diagnoses can learn the drugs and the reader's counters have something to count.
- ``write_synthetic_safedrug``: ``records_final.pkl``, ``voc_final.pkl`` and ``ddi_A_final.pkl`` in the
  layout SafeDrug / GAMENet publish (patients -> visits -> ``[diagnosis ids, procedure ids, drug ids]``;
  ``{"diag_voc", "pro_voc", "med_voc"}`` objects with ``idx2word`` / ``word2idx``; a 0/1 adjacency array).

Nothing here is real patient data.
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: ATC-3 classes the synthetic prescriptions draw from.
SYNTHETIC_ATC3 = (
    "A02B",
    "A06A",
    "A12B",
    "B01A",
    "B05C",
    "C03C",
    "C07A",
    "C09A",
    "C10A",
    "J01C",
    "J01D",
    "J01M",
    "N01A",
    "N02A",
    "N02B",
    "N05B",
    "N05C",
    "R03A",
    "H02A",
    "A10A",
)
UNMAPPED_NDC = "99999999999"


@dataclass
class SyntheticMimic:
    """What ``write_synthetic_mimic`` wrote: the folder, the map, and the ground truth of the structure."""

    folder: Path
    ndc_map: Path
    diagnosis_drugs: dict[str, list[str]]
    admissions: int
    patients: int
    ndc_zero_rows: int
    unmapped_rows: int
    drug_sets: dict[str, list[str]] = field(default_factory=dict)


def _write_table(path: Path, header: list[str], rows: list[list], upper: bool, gz: bool) -> None:
    header = [h.upper() for h in header] if upper else header
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wt", newline="") as handle:
            handle.write(buffer.getvalue())
    else:
        path.write_text(buffer.getvalue())


def _diagnosis_drugs(n_diagnoses: int, rng: random.Random) -> dict[str, list[str]]:
    """Each diagnosis code ``D<k>`` (written as ICD-9-like ``90<k>``) -> 1 or 2 ATC-3 classes."""
    return {f"90{k:02d}": rng.sample(SYNTHETIC_ATC3, rng.choice((1, 2))) for k in range(n_diagnoses)}


def write_synthetic_mimic(
    folder: str | Path,
    n_patients: int = 60,
    max_admissions: int = 3,
    n_diagnoses: int = 12,
    seed: int = 0,
    upper_case: bool = False,
    gz: bool = False,
) -> SyntheticMimic:
    """Write the four MIMIC-III tables and an NDC -> ATC-3 map into ``folder``.

    Args:
        folder: output folder (created).
        n_patients: patients; each has 1 to ``max_admissions`` admissions, one year apart.
        max_admissions: most admissions per patient.
        n_diagnoses: distinct diagnosis codes; each admission gets 2 to 4 of them.
        seed: random seed.
        upper_case: upper-case column names (as in the full release) instead of lower case (the demo).
        gz: write ``TABLE.csv.gz`` instead of ``TABLE.csv``.

    Returns:
        the paths and the ground truth (``diagnosis_drugs``: ICD-9 code -> ATC-3 classes; ``drug_sets``:
        hadm_id -> prescribed ATC-3 classes).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    diagnosis_drugs = _diagnosis_drugs(n_diagnoses, rng)
    ndcs = {atc: [f"{i:05d}{j:06d}" for j in (1, 2)] for i, atc in enumerate(SYNTHETIC_ATC3, start=10)}
    tables: dict[str, list[list]] = {
        "ADMISSIONS": [],
        "DIAGNOSES_ICD": [],
        "PROCEDURES_ICD": [],
        "PRESCRIPTIONS": [],
    }
    truth = SyntheticMimic(folder, folder / "ndc_to_atc3.csv", diagnosis_drugs, 0, n_patients, 0, 0)
    hadm, row = 100000, 1
    for subject in range(1, n_patients + 1):
        for visit in range(rng.randint(1, max_admissions)):
            hadm += 1
            truth.admissions += 1
            tables["ADMISSIONS"].append([row, subject, hadm, f"{2100 + visit}-0{rng.randint(1, 9)}-15 08:30:00"])
            codes = rng.sample(sorted(diagnosis_drugs), rng.randint(2, 4))
            drugs = sorted({d for c in codes for d in diagnosis_drugs[c]})
            truth.drug_sets[str(hadm)] = drugs
            for seq, code in enumerate(codes, start=1):
                tables["DIAGNOSES_ICD"].append([row, subject, hadm, seq, code])
                row += 1
            tables["PROCEDURES_ICD"].append([row, subject, hadm, 1, f"{rng.randint(10, 99)}{rng.randint(10, 99)}"])
            for drug in drugs:
                tables["PRESCRIPTIONS"].append([row, subject, hadm, "MAIN", drug, rng.choice(ndcs[drug])])
                row += 1
            tables["PRESCRIPTIONS"].append([row, subject, hadm, "BASE", "NS", "0"])
            tables["PRESCRIPTIONS"].append([row + 1, subject, hadm, "MAIN", "Unmapped", UNMAPPED_NDC])
            truth.ndc_zero_rows += 1
            truth.unmapped_rows += 1
            row += 2
    headers = {
        "ADMISSIONS": ["row_id", "subject_id", "hadm_id", "admittime"],
        "DIAGNOSES_ICD": ["row_id", "subject_id", "hadm_id", "seq_num", "icd9_code"],
        "PROCEDURES_ICD": ["row_id", "subject_id", "hadm_id", "seq_num", "icd9_code"],
        "PRESCRIPTIONS": ["row_id", "subject_id", "hadm_id", "drug_type", "drug", "ndc"],
    }
    for table, rows in tables.items():
        _write_table(folder / f"{table}.csv", headers[table], rows, upper_case, gz)
    map_rows = [[ndc, atc] for atc, pair in ndcs.items() for ndc in pair]
    _write_table(truth.ndc_map, ["ndc", "atc3"], map_rows, upper=False, gz=False)
    return truth


class Voc:
    """SafeDrug's vocabulary object: ``idx2word`` and ``word2idx`` dicts (``processing.py``)."""

    def __init__(self) -> None:
        self.idx2word: dict[int, str] = {}
        self.word2idx: dict[str, int] = {}

    def add_sentence(self, sentence: list[str]) -> None:
        for word in sentence:
            if word not in self.word2idx:
                self.idx2word[len(self.word2idx)] = word
                self.word2idx[word] = len(self.word2idx)


def write_synthetic_safedrug(
    folder: str | Path, n_patients: int = 60, max_admissions: int = 3, seed: int = 0, main_module: bool = True
) -> Path:
    """Write ``records_final.pkl``, ``voc_final.pkl`` and ``ddi_A_final.pkl`` in SafeDrug's layout.

    The records follow ``write_synthetic_mimic``'s diagnosis -> drug structure; interacting pairs are the
    first few ATC-3 classes paired in order.

    Args:
        folder: output folder (created).
        n_patients: patients, each with 1 to ``max_admissions`` visits.
        max_admissions: most visits per patient.
        seed: random seed.
        main_module: record the vocabulary class as ``__main__.Voc``, as SafeDrug's script pickles it
            (protocol 2, so the module name is plain text); otherwise as this module's ``Voc``.

    Returns:
        the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    diagnosis_drugs = _diagnosis_drugs(12, rng)
    vocs = {"diag_voc": Voc(), "pro_voc": Voc(), "med_voc": Voc()}
    records = []
    for _ in range(n_patients):
        patient = []
        for _ in range(rng.randint(1, max_admissions)):
            codes = rng.sample(sorted(diagnosis_drugs), rng.randint(2, 4))
            procedures = [f"{rng.randint(10, 99)}{rng.randint(10, 99)}"]
            drugs = sorted({d for c in codes for d in diagnosis_drugs[c]})
            for key, words in (("diag_voc", codes), ("pro_voc", procedures), ("med_voc", drugs)):
                vocs[key].add_sentence(words)
            patient.append(
                [
                    [vocs["diag_voc"].word2idx[c] for c in codes],
                    [vocs["pro_voc"].word2idx[p] for p in procedures],
                    [vocs["med_voc"].word2idx[d] for d in drugs],
                ]
            )
        records.append(patient)
    n_med = len(vocs["med_voc"].idx2word)
    ddi = np.zeros((n_med, n_med))
    for i in range(0, min(n_med, 8) - 1, 2):
        ddi[i, i + 1] = ddi[i + 1, i] = 1
    (folder / "records_final.pkl").write_bytes(pickle.dumps(records))
    (folder / "ddi_A_final.pkl").write_bytes(pickle.dumps(ddi))
    voc_bytes = pickle.dumps(vocs, protocol=2)
    if main_module:
        voc_bytes = voc_bytes.replace(f"c{__name__}\nVoc\n".encode(), b"c__main__\nVoc\n")
    (folder / "voc_final.pkl").write_bytes(voc_bytes)
    return folder
