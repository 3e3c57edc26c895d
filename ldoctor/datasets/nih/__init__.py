"""NIH ChestX-ray14: label table, PNGs and split lists -> patient-split records (:mod:`~ldoctor.datasets.nih.records`)."""

from __future__ import annotations

from ldoctor.datasets.nih.records import (
    CHESTXRAY14_FINDINGS,
    NIH_DEMO,
    NIHFolder,
    NIHSplits,
    check_disjoint_folders,
    disease_task,
    findings_matrix,
    read_label_table,
    read_nih,
    read_nih_folder,
    split_nih,
)

__all__ = [
    "CHESTXRAY14_FINDINGS",
    "NIH_DEMO",
    "NIHFolder",
    "NIHSplits",
    "check_disjoint_folders",
    "disease_task",
    "findings_matrix",
    "read_label_table",
    "read_nih",
    "read_nih_folder",
    "split_nih",
]
