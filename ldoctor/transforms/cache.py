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


def cached_dataset(
    records: Sequence[dict],
    preprocess: Compose,
    postprocess: Compose,
    cache: CacheMode = "memory",
    cache_dir: str | Path | None = None,
    memory: dict[str, dict] | None = None,
) -> Dataset:
    """Records -> a MONAI ``Dataset`` whose items are ``postprocess(preprocess(record))``, ``preprocess`` cached.

    Args:
        records: one dict per sample with a unique ``"id"`` (and ``"label"``).
        preprocess: deterministic transforms (their output is cached).
        postprocess: per-access transforms (``Rand*d``, normalisation).
        cache: ``"memory"``, ``"disk"`` or ``"none"`` (module docstring).
        cache_dir: the folder of this preprocessing's disk cache (``cache="disk"``); created if needed.
        memory: the in-memory store to fill and reuse (``cache="memory"``); a new one when ``None``.
    """
    if cache == "memory":
        store = {} if memory is None else memory
        for record in records:  # in record order, so readers that keep the last volume open read each once
            if record["id"] not in store:
                store[record["id"]] = preprocess(record)
        return Dataset([{**store[r["id"]], "label": label_tensor(r["label"])} for r in records], postprocess)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("cache='disk' needs cache_dir")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        inner = PersistentDataset(list(records), preprocess, cache_dir=cache_dir, hash_transform=json_hashing)
        return Dataset(inner, postprocess)
    if cache != "none":
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    return Dataset(Dataset(list(records), preprocess), postprocess)
