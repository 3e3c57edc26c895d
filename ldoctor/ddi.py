"""Drug-drug interaction (DDI) graphs over a drug vocabulary, read from ATC-3 pair CSVs or SafeDrug's ``ddi_A``.

Used by the ``drug`` task's loss (:class:`~ldoctor.losses.drug.DrugLoss`, a DDI penalty) and metrics
(:class:`~ldoctor.metrics.drug.DrugDDIRate`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ldoctor.errors import BadInput
from ldoctor.io.tables import read_csv_columns


def load_ddi_matrix(path: str | Path, drug_vocabulary: Sequence[str]) -> torch.Tensor:
    """Drug-drug interaction adjacency over ``drug_vocabulary``: ``[D, D]`` float, symmetric, 0 diagonal.

    Args:
        path: a CSV of ATC-3 pairs (columns ``atc3_a``, ``atc3_b``, any case) or an ``.npz`` with ``ddi_A``
            ``[K, K]`` and ``drugs`` ``[K]`` (written by ``ldoctor.datasets.mimic.safedrug``; loaded without
            pickle). Pairs naming drugs outside the vocabulary are ignored (they cannot be predicted).

    Raises:
        ValueError: bad columns, or an ``.npz`` whose matrix and drug list disagree.
    """
    path = Path(path)
    index = {d: i for i, d in enumerate(drug_vocabulary)}
    matrix = torch.zeros(len(index), len(index))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            adjacency, names = data["ddi_A"], [str(n) for n in data["drugs"]]
        if adjacency.shape != (len(names), len(names)):
            raise BadInput(f"{path}: ddi_A has shape {adjacency.shape}, expected {len(names)}x{len(names)} (drugs)")
        pairs = [(names[i], names[j]) for i, j in zip(*np.nonzero(adjacency))]
    else:
        frame = read_csv_columns(path, ("atc3_a", "atc3_b"))
        pairs = list(zip(frame["atc3_a"], frame["atc3_b"]))
    for a, b in pairs:
        if a in index and b in index and a != b:
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = 1.0
    return matrix


def write_ddi_pairs(path: str | Path, pairs: Iterable[tuple[str, str]]) -> None:
    """Write unordered ATC-3 pairs as a ``atc3_a,atc3_b`` CSV (each pair once, sorted)."""
    unique = sorted({tuple(sorted(p)) for p in pairs if p[0] != p[1]})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["atc3_a", "atc3_b"])
        writer.writerows(unique)
