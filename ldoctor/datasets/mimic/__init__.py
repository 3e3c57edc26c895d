"""MIMIC-III (the demo ships in ``ldoctor/demo_data``): CSV tables -> admission records and encoded samples.

- :mod:`~ldoctor.datasets.mimic.records`: the four tables + NDC -> ATC-3 map -> validated admission records, the
  cohort filters, vocabularies, per-admission samples and the ``drug`` task;
- :mod:`~ldoctor.datasets.mimic.dataset`: samples as index tensors, padded batches, admission-image links;
- :mod:`~ldoctor.datasets.mimic.safedrug`: SafeDrug / GAMENet processed records -> ``records.json`` (a command).
"""

from __future__ import annotations

from ldoctor.datasets.mimic.dataset import DrugDataset, collate_drug_batch, read_image_links
from ldoctor.datasets.mimic.records import (
    DEMO_DIR,
    DEMO_NDC_MAP,
    UNKNOWN_CODE,
    MimicStats,
    build_vocabularies,
    drug_task,
    filter_admissions,
    group_by_patient,
    patient_samples,
    read_mimic_admissions,
)

__all__ = [
    "DEMO_DIR",
    "DEMO_NDC_MAP",
    "UNKNOWN_CODE",
    "DrugDataset",
    "MimicStats",
    "build_vocabularies",
    "collate_drug_batch",
    "drug_task",
    "filter_admissions",
    "group_by_patient",
    "patient_samples",
    "read_image_links",
    "read_mimic_admissions",
]
