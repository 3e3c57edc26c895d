"""The ``drug`` section: medication classes recommended for the current admission from the patient's history.

The history is encoded with the checkpoint's code vocabulary exactly as in training
(:func:`ldoctor.datasets.mimic.records.admission_codes`; earlier admissions' drugs as ``M:`` codes when the model
was trained with them). A class is recommended when its probability reaches :data:`DECISION_THRESHOLD`, the
training loss's and the Jaccard benchmark's decision rule. Each recommendation is marked ``continued`` (given in the
previous admission) or ``new``; the previous admission's classes that are not recommended are listed as
``stopped``. Interactions come only from a table the user supplies (``--interactions``: CSV ``atc3_a,atc3_b`` and
optionally ``severity``): a class-level signal, with severity shown only where the table has it. Names of ATC-3
classes come from an optional user table (``--atc-names``: CSV ``atc3,name``); ldoctor ships none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ldoctor.datasets.mimic.dataset import DrugDataset, collate_drug_batch
from ldoctor.datasets.mimic.records import MEDICATION_PREFIX, UNKNOWN_CODE, admission_codes
from ldoctor.errors import BadInput
from ldoctor.io.tables import read_csv

DECISION_THRESHOLD = 0.5


def read_interactions(path: str | Path) -> list[tuple[str, str, str | None]]:
    """``atc3_a, atc3_b[, severity]`` rows (any column case) -> unordered pairs with their severity or ``None``.

    Raises:
        BadInput: the columns are missing, naming the file.
    """
    frame = read_csv(path, "an interaction table (atc3_a, atc3_b, optional severity)", dtype=str,
                     keep_default_na=False)
    columns = {c.strip().lower(): c for c in frame.columns}
    if "atc3_a" not in columns or "atc3_b" not in columns:
        raise BadInput(f"{path}: columns {list(frame.columns)}; expected atc3_a, atc3_b and optionally severity")
    severity = columns.get("severity")
    return [(str(row[columns["atc3_a"]]).strip(), str(row[columns["atc3_b"]]).strip(),
             (str(row[severity]).strip() or None) if severity else None) for row in frame.to_dict("records")]


def read_atc_names(path: str | Path) -> dict[str, str]:
    """``atc3, name`` rows -> ``{atc3: name}``.

    Raises:
        BadInput: the columns are missing, naming the file.
    """
    frame = read_csv(path, "an ATC-3 name table (atc3, name)", dtype=str, keep_default_na=False)
    columns = {c.strip().lower(): c for c in frame.columns}
    if "atc3" not in columns or "name" not in columns:
        raise BadInput(f"{path}: columns {list(frame.columns)}; expected atc3 and name")
    return {str(r[columns["atc3"]]).strip(): str(r[columns["name"]]).strip() for r in frame.to_dict("records")}


def encode_history(history: list[dict[str, list[str]]], code_vocabulary: list[str],
                   drug_vocabulary: list[str]) -> dict[str, Any]:
    """Admissions oldest first (the last = current) -> a one-sample drug batch (:func:`collate_drug_batch`)."""
    with_drugs = any(c.startswith(MEDICATION_PREFIX) for c in code_vocabulary)
    codes = [admission_codes(a, with_drugs) for a in history[:-1]] + [admission_codes({**history[-1], "drugs": []})]
    if UNKNOWN_CODE not in code_vocabulary:
        raise ValueError(f"the checkpoint's code vocabulary has no {UNKNOWN_CODE!r}; expected the MIMIC-III reader's")
    dataset = DrugDataset([{"id": "case", "hadm_id": "current", "history": codes, "drugs": []}], code_vocabulary,
                          drug_vocabulary)
    return collate_drug_batch([dataset[0]])


def drug_section(probs: list[float], drug_vocabulary: list[str], history: list[dict[str, list[str]]],
                 interactions: list[tuple[str, str, str | None]] | None = None, interaction_source: str | None = None,
                 names: dict[str, str] | None = None) -> dict[str, Any]:
    """Recommend the current admission's medication classes.

    Args:
        probs: the model's probability per class of ``drug_vocabulary`` (``predict_step`` on
            :func:`encode_history`'s batch).
        drug_vocabulary: the task's classes (ATC-3).
        history: the case's admissions, oldest first.
        interactions: ``(atc3_a, atc3_b, severity)`` pairs from the user's table, or ``None`` (none supplied).
        interaction_source: the table's file name, for the report.
        names: ATC-3 names, when the user supplied a table.

    Returns:
        the ``drug`` entry of ``report.json``.
    """
    names = names or {}
    previous = set(history[-2]["drugs"]) if len(history) > 1 else set()
    order = sorted(range(len(drug_vocabulary)), key=lambda d: -probs[d])
    recommended = [{"atc3": drug_vocabulary[d], "name": names.get(drug_vocabulary[d]), "probability": probs[d],
                    "status": "continued" if drug_vocabulary[d] in previous else "new"}
                   for d in order if probs[d] >= DECISION_THRESHOLD]
    chosen = {r["atc3"] for r in recommended}
    index = {d: k for k, d in enumerate(drug_vocabulary)}
    stopped = [{"atc3": d, "name": names.get(d), "probability": probs[index[d]] if d in index else None}
               for d in sorted(previous - chosen)]
    found = []
    for a, b, severity in interactions or []:
        if a in chosen and b in chosen and a != b:
            found.append({"a": min(a, b), "b": max(a, b), "severity": severity})
    unique = {(f["a"], f["b"]): f for f in found}
    return {
        "admissions": len(history), "threshold": DECISION_THRESHOLD, "recommended": recommended, "stopped": stopped,
        "interactions": sorted(unique.values(), key=lambda f: (f["a"], f["b"])),
        "interaction_table": f"user table {interaction_source}" if interactions is not None else "none supplied",
    }
