"""Radiograph loader throughput: 1024 px PNGs -> augmented 224 px training tensors, uncached vs cached.

Builds the ChestX-ray14 training pipeline (``cached_dataset`` + ``radiograph_preprocess`` +
``radiograph_postprocess`` with the default augmentation, as ``ChestXray14DataModule`` does) over 1024 px PNGs:
the real NIH 1024 px images shipped in ``tests/data/nih/images/1024`` plus synthetic ones made from them
(shifted copies saved as new PNGs, so they compress and decode like real radiographs). It then times full
epochs through a ``DataLoader`` with ``--num-workers`` workers:

- ``no cache``: every epoch decodes and resizes every PNG (the classic bottleneck);
- ``cache, epoch 1``: the same work plus writing the ``uint8`` cache (``PersistentDataset``);
- ``cache, epochs 2..``: read the 224 px ``uint8`` cache, augment, normalise.

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
from torch.utils.data import DataLoader

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
    p.add_argument("--cached-epochs", type=int, default=3, help="epochs timed after the cache is filled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the result table as JSON here")
    return p.parse_args(argv)


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


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="ldoctor-loader-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = write_images(folder, args.num_images, args.seed)
        records = [{"image": str(p), "label": np.zeros(14, np.float32), "id": p.name} for p in paths]
        pre = radiograph_preprocess(args.image_size)
        post = radiograph_postprocess(DEFAULT_AUGMENTATION, args.image_size)

        def loader(cache_dir: Path | None) -> DataLoader:
            dataset = cached_dataset(records, pre, post, "disk" if cache_dir else "none", cache_dir)
            return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                              persistent_workers=args.num_workers > 0)

        uncached_s, n = time_epoch(loader(None))
        cached_loader = loader(Path(tmp) / "cache")
        first_s, _ = time_epoch(cached_loader)
        later = [time_epoch(cached_loader)[0] for _ in range(args.cached_epochs)]
        batch_shape = [args.batch_size, *cached_loader.dataset[0]["image"].shape]
        cache_bytes = sum(f.stat().st_size for f in (Path(tmp) / "cache").glob("*.pt"))
        del cached_loader  # stop its persistent workers before the temporary folder goes
        gc.collect()
    later_s = float(np.median(later))
    return {
        "images": n,
        "source": f"{len(list(REAL_1024.glob('*.png')))} real NIH 1024 px PNGs + shifted copies",
        "image_size": args.image_size,
        "batch_shape": batch_shape,
        "num_workers": args.num_workers,
        "no_cache_images_per_s": round(n / uncached_s, 1),
        "cache_first_epoch_images_per_s": round(n / first_s, 1),
        "cached_epoch_images_per_s": round(n / later_s, 1),
        "cached_epochs_seconds": [round(s, 2) for s in later],
        "speedup_cached_vs_no_cache": round(uncached_s / later_s, 2),
        "cache_kib_per_image": round(cache_bytes / n / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    write_result(result, args.out, "\n".join([
        "| pipeline | images/s |", "|---|---|",
        f"| no cache (decode 1024 px PNG every epoch) | {result['no_cache_images_per_s']} |",
        f"| cache, first epoch (decode + write uint8 cache) | {result['cache_first_epoch_images_per_s']} |",
        f"| cache, later epochs (median) | {result['cached_epoch_images_per_s']} |",
        f"speed-up cached vs no cache: {result['speedup_cached_vs_no_cache']}x"]))
    return result


if __name__ == "__main__":
    main()
