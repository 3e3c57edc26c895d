"""MIMIC-III (the demo ships in ``ldoctor/demo_data``): CSV tables -> admission records and encoded samples.

- :mod:`~ldoctor.datasets.mimic.records`: the four tables + NDC -> ATC-3 map -> validated admission records, the
  cohort filters, vocabularies, per-admission samples and the ``drug`` task;
- :mod:`~ldoctor.datasets.mimic.dataset`: samples as index tensors, padded batches, admission-image links;
- :mod:`~ldoctor.datasets.mimic.safedrug`: SafeDrug / GAMENet processed records -> ``records.json`` (a command).
"""

from __future__ import annotations

from ldoctor.datasets.mimic.records import DEMO_DIR, DEMO_NDC_MAP, drug_task, read_mimic_admissions

__all__ = ["DEMO_DIR", "DEMO_NDC_MAP", "drug_task", "read_mimic_admissions"]
