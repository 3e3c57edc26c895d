"""MedMNIST v2 ``.npz`` files (Yang et al., Scientific Data 2023) as a task, from config alone.

A MedMNIST 2D file holds ``{split}_images`` (``uint8 [N, H, W]`` grey or ``[N, H, W, 3]`` RGB) and
``{split}_labels`` (``[N, 1]`` class indices or ``[N, C]`` 0/1 multi-labels) for ``split`` in ``train``,
``val`` and, optionally, ``test``. The task kind follows from the labels: one column with classes {0, 1} ->
``binary``, one column with more classes -> ``multiclass``, several columns -> ``multilabel`` (ChestMNIST).

The default file is the PneumoniaMNIST train/val cut shipped in ``ldoctor/demo_data/pneumoniamnist``
(0 = normal, 1 = pneumonia; CC BY 4.0).

Example:
    >>> with np.load(PNEUMONIAMNIST_DEMO) as npz:                      # doctest: +SKIP
    ...     images, labels = load_split(npz, PNEUMONIAMNIST_DEMO, "train")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ldoctor.errors import BadInput
from ldoctor.tasks import TaskSpec

#: PneumoniaMNIST train (4,707) / val (524) shipped with the package (no test split).
PNEUMONIAMNIST_DEMO = str(Path(__file__).resolve().parents[2] / "demo_data/pneumoniamnist/pneumoniamnist_trainval.npz")
SPLITS = ("train", "val", "test")


def infer_task(labels: list[np.ndarray], name: str, class_names: list[str] | None) -> TaskSpec:
    """Task spec from the label arrays of all splits (each ``[N, 1]`` or ``[N, C]``).

    Args:
        labels: label arrays of the splits.
        name: task name.
        class_names: one name per output; for a binary task either ``[positive]`` or ``[negative, positive]``.
    """
    columns = labels[0].shape[1]
    if columns > 1:
        kind, outputs = "multilabel", columns
    else:
        classes = int(max(int(y.max()) for y in labels if y.size)) + 1
        kind, outputs = ("binary", 1) if classes <= 2 else ("multiclass", classes)
    if kind == "binary" and class_names is not None and len(class_names) == 2:
        class_names = class_names[1:]
    return TaskSpec(name=name, kind=kind, num_outputs=outputs, class_names=class_names)


def load_split(npz: np.lib.npyio.NpzFile, path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate ``{split}_images`` / ``{split}_labels``.

    Returns:
        images ``uint8 [N, H, W]`` or ``[N, H, W, 3]``; labels ``int64 [N, columns]``.

    Raises:
        ValueError: naming the file, the key and the row: wrong dtype or rank, count mismatch, labels that
            are not non-negative integers.
    """
    images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise BadInput(
            f"{path}: {split}_images is {images.dtype} {images.shape}; expected uint8 [N, H, W] or [N, H, W, 3]"
        )
    labels = labels.reshape(len(labels), -1) if labels.ndim == 1 else labels
    if labels.ndim != 2 or len(labels) != len(images):
        raise BadInput(
            f"{path}: {split}_labels has shape {labels.shape} for {len(images)} images; expected [N, 1] or [N, C]"
        )
    as_float = labels.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(as_float).all(1) | (as_float < 0).any(1) | (as_float % 1 != 0).any(1))
    if bad.size:
        raise BadInput(
            f"{path}: {split}_labels row {bad[0]} is {labels[bad[0]].tolist()}; expected non-negative integers"
        )
    if labels.shape[1] > 1 and (labels > 1).any():
        row = int(np.flatnonzero((labels > 1).any(1))[0])
        raise BadInput(f"{path}: {split}_labels row {row} is {labels[row].tolist()}; expected 0/1 multi-labels")
    return images, labels.astype(np.int64)
