"""Datasets that cache the deterministic preprocessing (decode, grey, resize, uint8) of 2D images.

``preprocess`` runs once per sample and its ``uint8`` output is kept, on disk (MONAI ``PersistentDataset``,
one ``.pt`` file per sample, keyed by a hash of the record and of the preprocessing transforms) or in
memory (MONAI ``CacheDataset``); ``postprocess`` (augmentation, normalisation) runs on every access.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import json_hashing
from monai.transforms import Compose


def check_cache_dir(cache_dir: str | Path, data_root: str | Path) -> Path:
    """Refuse a cache folder inside the user's data folder (nothing is ever written there).

    Raises:
        ValueError: ``cache_dir`` is ``data_root`` or below it.
    """
    cache, root = Path(cache_dir).expanduser().resolve(), Path(data_root).expanduser().resolve()
    if cache == root or root in cache.parents:
        raise ValueError(
            f"cache_dir {cache} lies inside the data folder {root}; caches must go to their own folder "
            "(ldoctor never writes into data folders)"
        )
    return cache


def cached_dataset(
    records: Sequence[dict],
    preprocess: Compose,
    postprocess: Compose,
    cache_dir: str | Path | None = None,
    in_memory: bool = False,
    num_workers: int = 0,
) -> Dataset:
    """Wrap records so that ``preprocess`` is computed once and ``postprocess`` every time.

    Args:
        records: one dict per sample (``{"image": path or array, "label": ..., "id": ...}``).
        preprocess: deterministic transforms (their output is cached).
        postprocess: per-access transforms (``Rand*d``, normalisation).
        cache_dir: folder of the on-disk cache; created if needed. Takes precedence over ``in_memory``.
        in_memory: without ``cache_dir``, keep the preprocessed samples in RAM (computed up front).
        num_workers: threads used to fill the in-memory cache.

    Returns:
        A MONAI ``Dataset`` whose items are ``postprocess(preprocess(record))``.
    """
    inner: Dataset
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        inner = PersistentDataset(list(records), preprocess, cache_dir=cache_dir, hash_transform=json_hashing)
    elif in_memory:
        inner = CacheDataset(list(records), preprocess, cache_rate=1.0, num_workers=max(num_workers, 1),
                             progress=False)
    else:
        inner = Dataset(list(records), preprocess)
    return Dataset(inner, postprocess)
