"""The one cache setting of every DataModule with a deterministic preprocessing step.

Records go through ``preprocess`` (decode, resample, resize, quantise: the expensive, deterministic part) once;
``postprocess`` (augmentation, normalisation) runs on every access. Where the preprocessed samples are kept is
one setting, ``cache``:

- ``"memory"``: in RAM, keyed by each record's ``"id"`` in a dict that the caller may share between the splits
  and folds of one DataModule, so each sample is preprocessed once however the records are regrouped;
- ``"disk"``: MONAI ``PersistentDataset`` files under ``cache_dir`` (one ``.pt`` per sample, keyed by a hash of
  the record and of the transforms), reused across runs;
- ``"none"``: preprocess on every access.

Labels never come from a cache: an item's ``"label"`` is always its record's (so a training split can relabel, e.g.
soft targets, without new cache entries in memory).

A record whose preprocessing fails raises one error naming its file (:mod:`ldoctor.transforms.failures`), in every
mode. With ``"memory"`` that happens at setup, where a :class:`~ldoctor.errors.BadInputLog` with ``skip_bad`` leaves
the record out and counts it instead (:func:`preprocess_records`); with ``"disk"`` and ``"none"`` it happens while a
batch is loaded, where nothing can be skipped: the error says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from monai.data import Dataset, PersistentDataset
from monai.data.utils import json_hashing
from monai.transforms import Compose

from ldoctor.errors import BadInput, BadInputLog
from ldoctor.transforms.failures import ANY_FILE, LAZY_HINT, RecordFile, named_error

CacheMode = Literal["memory", "disk", "none"]
CACHE_MODES: tuple[str, ...] = ("memory", "disk", "none")


def label_tensor(label: object) -> torch.Tensor:
    """A record's label as the float32 tensor the batches carry (NaN = unknown)."""
    return torch.as_tensor(np.asarray(label, dtype=np.float32))


def check_cache(cache: str, cache_dir: str | Path | None, data_root: str | Path) -> Path | None:
    """Validate a DataModule's ``cache`` / ``cache_dir`` before anything is read.

    Returns:
        the resolved cache folder, or ``None``.

    Raises:
        ValueError: unknown mode, ``"disk"`` without ``cache_dir``, or a cache folder inside the data folder
            (nothing is ever written into the user's data).
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if cache == "disk" and cache_dir is None:
        raise ValueError("cache='disk' needs cache_dir (a folder of its own, outside the data folder)")
    if cache_dir is None:
        return None
    folder, root = Path(cache_dir).expanduser().resolve(), Path(data_root).expanduser().resolve()
    if folder == root or root in folder.parents:
        raise ValueError(
            f"cache_dir {folder} lies inside the data folder {root}; caches must go to their own folder "
            "(ldoctor never writes into data folders)"
        )
    return folder


def preprocess_records(
    records: Sequence[dict],
    preprocess: Compose,
    memory: dict[str, dict | None],
    bad: BadInputLog | None = None,
    file: RecordFile = ANY_FILE,
) -> list[dict]:
    """Preprocess every record not yet in ``memory`` (in record order) and return the records that have a sample.

    A record whose preprocessing fails raises one error naming its file (:func:`~ldoctor.transforms.failures.named_error`),
    or, when ``bad`` skips (``skip_bad``), is counted under ``file.kind`` and left out: ``memory`` then holds ``None``
    for it, so it is neither read nor counted again by later splits or folds.

    Args:
        records: one dict per sample with a unique ``"id"``.
        preprocess: deterministic transforms.
        memory: ``id -> preprocessed sample`` (``None``: skipped), filled here.
        bad: the DataModule's collector; ``None`` raises at the first failure.
        file: the record key holding the file and what it should be.

    Returns:
        the records whose sample is in ``memory``, in their order.

    Raises:
        BadInput | FileNotFoundError: naming the file, unless ``bad`` skips.
    """
    kept = []
    for record in records:  # in record order, so readers that keep the last volume open read each once
        if record["id"] not in memory:
            memory[record["id"]] = _preprocess_one(record, preprocess, bad, file)
        if memory[record["id"]] is not None:
            kept.append(record)
    return kept


def _preprocess_one(record: dict, preprocess: Compose, bad: BadInputLog | None, file: RecordFile) -> dict | None:
    """``preprocess(record)``, or (failure skipped by ``bad``) ``None``."""
    try:
        return preprocess(record)
    except Exception as err:  # any reader's failure becomes one error naming the file
        error = named_error(err, file.source(record), file.expected)
        if bad is None:
            raise error from error.__cause__
    try:
        bad.report(file.kind, str(error), BadInput if isinstance(error, BadInput) else FileNotFoundError)
    except (BadInput, FileNotFoundError) as reported:  # not skipping: raise it with the reader's cause
        raise reported from error.__cause__
    return None


class _NamingFailures:
    """Mixin of a MONAI dataset whose ``transform`` is the preprocessing: a failure raises one error naming the
    record's file (:data:`~ldoctor.transforms.failures.LAZY_HINT` appended), not MONAI's ``RuntimeError``."""

    file: RecordFile

    def _transform(self, index: int) -> dict:
        try:
            return super()._transform(index)  # type: ignore[misc]
        except Exception as err:
            record = self.data[index]  # type: ignore[attr-defined]
            error = named_error(err, self.file.source(record), self.file.expected, LAZY_HINT)
            raise error from error.__cause__


class _LazyDataset(_NamingFailures, Dataset):
    """``cache="none"``: preprocess on every access."""

    def __init__(self, records: list[dict], preprocess: Compose, file: RecordFile) -> None:
        super().__init__(records, preprocess)
        self.file = file


class _DiskDataset(_NamingFailures, PersistentDataset):
    """``cache="disk"``: MONAI's ``PersistentDataset``, preprocessed on first access."""

    def __init__(self, records: list[dict], preprocess: Compose, cache_dir: str | Path, file: RecordFile) -> None:
        super().__init__(records, preprocess, cache_dir=cache_dir, hash_transform=json_hashing)
        self.file = file


def cached_dataset(
    records: Sequence[dict],
    preprocess: Compose,
    postprocess: Compose,
    cache: CacheMode = "memory",
    cache_dir: str | Path | None = None,
    memory: dict[str, dict | None] | None = None,
    bad: BadInputLog | None = None,
    file: RecordFile = ANY_FILE,
) -> Dataset:
    """Records -> a MONAI ``Dataset`` whose items are ``postprocess(preprocess(record))``, ``preprocess`` cached.

    Args:
        records: one dict per sample with a unique ``"id"`` (and ``"label"``).
        preprocess: deterministic transforms (their output is cached).
        postprocess: per-access transforms (``Rand*d``, normalisation).
        cache: ``"memory"``, ``"disk"`` or ``"none"`` (module docstring).
        cache_dir: the folder of this preprocessing's disk cache (``cache="disk"``); created if needed.
        memory: the in-memory store to fill and reuse (``cache="memory"``); a new one when ``None``.
        bad: ``cache="memory"``: the DataModule's collector, which raises at a record whose preprocessing fails or,
            with ``skip_bad``, leaves it out (:func:`preprocess_records`; a DataModule whose records must match its
            datasets calls that first). ``None`` raises. The lazy modes always raise: ``skip_bad`` cannot leave a
            sample out of a batch, so the error names the file and suggests ``cache="memory"``.
        file: the record key holding the file and what it should be, for the error messages.
    """
    if cache == "memory":
        store = {} if memory is None else memory
        kept = preprocess_records(records, preprocess, store, bad, file)
        return Dataset([{**store[r["id"]], "label": label_tensor(r["label"])} for r in kept], postprocess)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("cache='disk' needs cache_dir")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return Dataset(_DiskDataset(list(records), preprocess, cache_dir, file), postprocess)
    if cache != "none":
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    return Dataset(_LazyDataset(list(records), preprocess, file), postprocess)
