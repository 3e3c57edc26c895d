"""Radiograph loader throughput: 1024 px PNGs -> augmented 224 px training tensors, uncached vs cached.

Builds the ChestX-ray14 training pipeline (``cached_dataset`` + ``radiograph_preprocess`` +
``radiograph_postprocess`` with the default augmentation, as ``ChestXray14DataModule`` does) over 1024 px PNGs:
the real NIH 1024 px images shipped in ``tests/data/nih/images/1024`` plus synthetic ones made from them
(shifted copies saved as new PNGs, so they compress and decode like real radiographs). It times full epochs of
two pipelines:

- ``no cache``: every epoch decodes and resizes every PNG (the classic bottleneck);
- ``cache``: the first epoch does the same work plus writing the ``uint8`` cache (``PersistentDataset``); later
  epochs read the 224 px ``uint8`` cache, augment, normalise.

Protocol, the same for both pipelines: one ``DataLoader`` per pipeline with the same settings (batch size,
shuffling, ``--num-workers`` workers, persistent workers when there are any); the pipeline's first epoch, which
includes starting the workers, is timed on its own and kept out of the comparison (for the cache it is also the
epoch that fills it); then ``--timed-epochs`` epochs are timed with the workers already running, and the median
of those is the pipeline's images/s. The speed-up is the ratio of the two medians. The uncached loader is shut
down (workers stopped) before the cached one starts, so the two never run at the same time.

    python benchmarks/loader_throughput.py --out loader.json
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

from ldoctor.evaluation.report import write_result
from ldoctor.transforms.cache import cached_dataset
from ldoctor.transforms.radiograph import DEFAULT_AUGMENTATION, radiograph_postprocess, radiograph_preprocess

REAL_1024 = Path(__file__).resolve().parents[1] / "tests" / "data" / "nih" / "images" / "1024"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=192, help="images per epoch (real ones + synthetic copies)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--timed-epochs", "--cached-epochs", dest="timed_epochs", type=int, default=3,
                   help="epochs timed per pipeline after its first (start-up / cache-filling) epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the result table as JSON here")
    args = p.parse_args(argv)
    if args.timed_epochs < 1:
        p.error("--timed-epochs must be >= 1")
    return args


def write_images(folder: Path, count: int, seed: int) -> list[Path]:
    """The real 1024 px PNGs plus shifted copies of them, ``count`` in all, as 8-bit grey PNGs."""
    real = sorted(REAL_1024.glob("*.png"))
    if not real:
        raise FileNotFoundError(f"{REAL_1024}: no real 1024 px PNGs")
    rng = np.random.default_rng(seed)
    sources = [np.asarray(Image.open(p).convert("L")) for p in real]
    paths = list(real)
    for i in range(count - len(real)):
        shifted = np.roll(sources[i % len(sources)], tuple(rng.integers(-40, 41, 2)), axis=(0, 1))
        path = folder / f"synthetic_{i:05d}.png"
        Image.fromarray(shifted, mode="L").save(path)
        paths.append(path)
    return paths[:count]


def time_epoch(loader: DataLoader) -> tuple[float, int]:
    """Seconds and images of one pass; the batches are touched so the work cannot be skipped."""
    start, images, checksum = time.perf_counter(), 0, 0.0
    for batch in loader:
        images += len(batch["image"])
        checksum += float(batch["image"][:, 0, 0, 0].sum())
    return time.perf_counter() - start, images


def loader_settings(loader: DataLoader) -> dict:
    """The settings of ``loader`` that bear on its timing, read from the loader itself."""
    return {
        "batch_size": loader.batch_size,
        "shuffle": isinstance(loader.sampler, RandomSampler),
        "num_workers": loader.num_workers,
        "persistent_workers": loader.persistent_workers,
        "pin_memory": loader.pin_memory,
    }


def time_pipeline(loader: DataLoader, timed_epochs: int) -> dict:
    """The first epoch (worker start-up; for a cache, also its filling) timed on its own, then ``timed_epochs``
    epochs with the workers running.

    Returns:
        ``images`` per epoch, ``first_epoch_s``, ``epochs_s`` (each timed epoch), ``median_s`` and the loader's
        ``settings``.
    """
    first_s, images = time_epoch(loader)
    epochs_s = [time_epoch(loader)[0] for _ in range(timed_epochs)]
    return {"images": images, "first_epoch_s": first_s, "epochs_s": epochs_s, "median_s": float(np.median(epochs_s)),
            "settings": loader_settings(loader)}


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="ldoctor-loader-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = write_images(folder, args.num_images, args.seed)
        records = [{"image": str(p), "label": np.zeros(14, np.float32), "id": p.name} for p in paths]
        pre = radiograph_preprocess(args.image_size)
        post = radiograph_postprocess(DEFAULT_AUGMENTATION, args.image_size)

        def measure(cache_dir: Path | None) -> dict:
            """Time one pipeline with the shared loader settings; its workers stop when the loader goes."""
            torch.manual_seed(args.seed)  # the same shuffling and augmentation draws for both pipelines
            dataset = cached_dataset(records, pre, post, "disk" if cache_dir else "none", cache_dir)
            loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                                persistent_workers=args.num_workers > 0)
            timing = time_pipeline(loader, args.timed_epochs)
            timing["batch_shape"] = [args.batch_size, *dataset[0]["image"].shape]
            return timing

        uncached = measure(None)
        gc.collect()  # the uncached loader's persistent workers are gone before the cached pipeline starts
        cached = measure(Path(tmp) / "cache")
        gc.collect()  # and the cached one's before the temporary folder goes
        cache_bytes = sum(f.stat().st_size for f in (Path(tmp) / "cache").glob("*.pt"))
    n = uncached["images"]
    return {
        "images": n,
        "source": f"{len(list(REAL_1024.glob('*.png')))} real NIH 1024 px PNGs + shifted copies",
        "image_size": args.image_size,
        "batch_shape": cached["batch_shape"],
        "num_workers": args.num_workers,
        "protocol": (
            "both pipelines: the same DataLoader settings (loader_settings); first epoch (worker start-up, and for "
            f"the cache its filling) timed alone and reported apart; then {args.timed_epochs} timed epochs with the "
            "workers running, median reported; speed-up = median no-cache epoch / median cached epoch; the pipelines "
            "run one after the other"
        ),
        "loader_settings": {"no_cache": uncached["settings"], "cache": cached["settings"]},
        "timed_epochs": {"no_cache": len(uncached["epochs_s"]), "cache": len(cached["epochs_s"])},
        "no_cache_first_epoch_images_per_s": round(n / uncached["first_epoch_s"], 1),
        "no_cache_images_per_s": round(n / uncached["median_s"], 1),
        "no_cache_epochs_seconds": [round(s, 2) for s in uncached["epochs_s"]],
        "cache_first_epoch_images_per_s": round(n / cached["first_epoch_s"], 1),
        "cached_epoch_images_per_s": round(n / cached["median_s"], 1),
        "cached_epochs_seconds": [round(s, 2) for s in cached["epochs_s"]],
        "speedup_cached_vs_no_cache": round(uncached["median_s"] / cached["median_s"], 2),
        "cache_kib_per_image": round(cache_bytes / n / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    epochs = result["timed_epochs"]["cache"]
    write_result(result, args.out, "\n".join([
        f"| pipeline ({result['images']} images / epoch) | images/s |", "|---|---|",
        f"| no cache, first epoch (worker start-up + decode 1024 px PNGs) | {result['no_cache_first_epoch_images_per_s']} |",
        f"| no cache, later epochs (decode every PNG again; median of {epochs}) | {result['no_cache_images_per_s']} |",
        f"| cache, first epoch (worker start-up + decode + write uint8 cache) | {result['cache_first_epoch_images_per_s']} |",
        f"| cache, later epochs (median of {epochs}) | {result['cached_epoch_images_per_s']} |",
        f"speed-up cached vs no cache (median later epoch of each): {result['speedup_cached_vs_no_cache']}x"]))
    return result


if __name__ == "__main__":
    main()
