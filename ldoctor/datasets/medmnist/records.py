"""MedMNIST v2 ``.npz`` files (Yang et al., Scientific Data 2023) as a task, from config alone.

A MedMNIST 2D file holds ``{split}_images`` (``uint8 [N, H, W]`` grey or ``[N, H, W, 3]`` RGB) and
``{split}_labels`` (``[N, 1]`` class indices or ``[N, C]`` 0/1 multi-labels) for ``split`` in ``train``,
``val`` and, optionally, ``test``. The task kind follows from the labels: one column with classes {0, 1} ->
``binary``, one column with more classes -> ``multiclass``, several columns -> ``multilabel`` (ChestMNIST).

A few stray values must not change the task (:func:`stray_binary_rows`): a multi-label column holding anything but
0/1 is refused, and so is a one-column label that is binary but for a handful of larger values (e.g. one ``2``
among thousands of 0/1 rows would otherwise make the task 3-class), naming the file, split and row.

The default file is the PneumoniaMNIST train/val cut shipped in ``ldoctor/demo_data/pneumoniamnist``
(0 = normal, 1 = pneumonia; CC BY 4.0).

A file that is not such an archive fails naming the file and the keys expected (:func:`open_npz`, :func:`read_array`):
an empty or non-zip file when it is opened, an array that cannot be read (object arrays, which only unpickling could
load and which are never unpickled; a damaged member) when it is read.

Example:
    >>> with open_npz(PNEUMONIAMNIST_DEMO) as npz:                      # doctest: +SKIP
    ...     images, labels = load_split(npz, PNEUMONIAMNIST_DEMO, "train")
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ldoctor.errors import BadInput
from ldoctor.tasks import TaskSpec

#: PneumoniaMNIST train (4,707) / val (524) shipped with the package (no test split).
PNEUMONIAMNIST_DEMO = str(Path(__file__).resolve().parents[2] / "demo_data/pneumoniamnist/pneumoniamnist_trainval.npz")
SPLITS = ("train", "val", "test")
#: A one-column label is "binary with stray values" when classes 0 and 1 both occur and the values >= 2 are at
#: most this share of its rows, over all splits of the file (:func:`stray_binary_rows`).
STRAY_SHARE = 0.01


#: What a MedMNIST file should hold, for messages.
EXPECTED_KEYS = ("a MedMNIST .npz (a zip written by np.savez) with uint8 train_images / val_images (and test_images) "
                 "[N, H, W] or [N, H, W, 3] and integer train_labels / val_labels (and test_labels) [N, 1] or [N, C]")


def open_npz(path: str | Path) -> np.lib.npyio.NpzFile:
    """Open a MedMNIST ``.npz`` (a context manager; arrays are read on access, :func:`read_array`).

    Raises:
        FileNotFoundError: no such file.
        BadInput: an empty file, or one that is not a zip archive (``np.load`` would read it as a pickle), naming the
            file and :data:`EXPECTED_KEYS`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MedMNIST .npz not found; check data.npz")
    size = path.stat().st_size
    if size == 0 or not zipfile.is_zipfile(path):
        found = "an empty file" if size == 0 else f"not a zip archive ({size} bytes)"
        raise BadInput(f"{path}: {found}; expected {EXPECTED_KEYS}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise BadInput(f"{path}: cannot be opened ({type(err).__name__}: {err}); expected {EXPECTED_KEYS}") from err


def read_array(npz: np.lib.npyio.NpzFile, path: str | Path, key: str) -> np.ndarray:
    """``npz[key]``, read without unpickling.

    Raises:
        BadInput: an object array (which only unpickling could read), a damaged member or other unreadable data,
            naming the file, the key and :data:`EXPECTED_KEYS`.
    """
    try:
        return npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise BadInput(f"{path}: {key} cannot be read ({type(err).__name__}: {err}); expected {EXPECTED_KEYS}") from err


def infer_task(labels: list[np.ndarray], name: str, class_names: list[str] | None) -> TaskSpec:
    """Task spec from the label arrays of all splits (each ``[N, 1]`` or ``[N, C]``).

    Args:
        labels: label arrays of the splits.
        name: task name.
        class_names: one name per output; for a binary task either ``[positive]`` or ``[negative, positive]``.

    Raises nothing about stray values: :func:`load_split`, which knows the file and the splits, refuses a binary
    column with a few values >= 2 (:func:`stray_binary_rows`) before this sees the labels.
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


def stray_binary_rows(labels: dict[str, np.ndarray]) -> list[tuple[str, int, int]]:
    """The stray rows of a one-column label that is binary but for a few values: ``(split, row, value)``, in split
    and row order; empty when the label is not of that kind.

    The rule, over the one-column labels of all splits together (``n`` rows): classes 0 and 1 both occur, some
    values are >= 2, and those rows are at most :data:`STRAY_SHARE` (1 %) of the ``n`` rows. A real multiclass
    MedMNIST label is far from it (its rarest class holds >= 1 % of the rows, and most of its rows are >= 2); a
    binary file with a stray ``2`` is caught once it has more than 100 rows (a smaller file with a stray value
    stays multiclass: too few rows to tell).
    """
    columns = {split: y.reshape(-1).astype(np.int64) for split, y in labels.items()
               if y.ndim in (1, 2) and (y.ndim == 1 or y.shape[1] == 1) and y.size}
    if not columns:
        return []
    values = np.concatenate(list(columns.values()))
    high = values >= 2
    if not high.any() or high.sum() > STRAY_SHARE * len(values) or not ((values == 0).any() and (values == 1).any()):
        return []
    return [(split, int(row), int(y[row])) for split, y in columns.items() for row in np.flatnonzero(y >= 2)]


def _file_labels(npz: np.lib.npyio.NpzFile, path: str) -> dict[str, np.ndarray]:
    """The well-formed label arrays of every split of the file (non-negative integers; the others are refused when
    their own split is loaded)."""
    labels = {}
    for split in SPLITS:
        if f"{split}_labels" not in npz.files:
            continue
        y = np.asarray(read_array(npz, path, f"{split}_labels"))
        if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.isfinite(y).all() and (y % 1 == 0).all()):
            if y.size == 0 or y.min() >= 0:
                labels[split] = y
    return labels


def load_split(npz: np.lib.npyio.NpzFile, path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate ``{split}_images`` / ``{split}_labels``.

    Returns:
        images ``uint8 [N, H, W]`` or ``[N, H, W, 3]``; labels ``int64 [N, columns]``.

    Raises:
        BadInput: an array that cannot be read (:func:`read_array`).
        ValueError: naming the file, the key and the row: wrong dtype or rank, count mismatch, labels that
            are not non-negative integers, multi-labels other than 0/1, a binary column with a few stray values
            (:func:`stray_binary_rows`; the stray row named may be in another split of the file).
    """
    images, labels = read_array(npz, path, f"{split}_images"), read_array(npz, path, f"{split}_labels")
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
    if labels.shape[1] == 1:
        every = _file_labels(npz, path)
        stray = stray_binary_rows(every)
        if stray:
            where, row, value = stray[0]
            n = sum(len(y) for y in every.values())
            more = f" (stray rows: {[(s, r) for s, r, _ in stray[:5]]})" if len(stray) > 1 else ""
            raise BadInput(
                f"{path}: {where}_labels row {row} is [{value}]; the label column is binary (0/1) in all but "
                f"{len(stray)} of its {n} rows over the splits {list(every)}{more}, so a value >= 2 "
                f"would make the task {max(v for _, _, v in stray) + 1}-class; expected 0/1 (rule: classes 0 and 1 "
                f"present and values >= 2 in at most {STRAY_SHARE:.0%} of the rows); fix the file"
            )
    return images, labels.astype(np.int64)
