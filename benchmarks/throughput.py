"""Training throughput: plain PyTorch loop vs MultiTaskModule under lightning.Trainer (one task, three tasks).

All three runs train the same trunk (torchvision ResNet-50 by default) with the same batch size, optimizer
(AdamW) and precision on in-memory synthetic batches, so the difference is the framework's cost. Throughput
is trunk images per second (a 2.5D CT sample with 3 views counts as 3 trunk images, and the tumor task
takes ``batch_size // 3`` nodules so that every trunk call sees ``batch_size`` images, as in the plain loop; the
drug task adds no trunk images). Each configuration is timed ``--repeats`` times, interleaved, after ``--warmup`` steps; the
best run of each is reported.

    python benchmarks/throughput.py --out r.json                      # CPU defaults
    python benchmarks/throughput.py --image-size 224 --batch-size 64 --precision bf16-mixed --channels-last --steps 50
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from functools import partial

import lightning as L
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDrugDataModule
from ldoctor.datamodule import TaskDataModule
from ldoctor.datasets.lidc import tumor_task
from ldoctor.datasets.nih import disease_task
from ldoctor.module import MultiTaskModule
from ldoctor.tasks import TaskSpec


class InMemory(Dataset):
    """``n`` fixed samples of one task, returned from memory (no decoding cost in the measurement)."""

    def __init__(self, n: int, shape: tuple[int, ...], num_outputs: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, *shape, generator=g)
        self.labels = (torch.rand(n, num_outputs, generator=g) < 0.3).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "id": str(i)}


class InMemoryDataModule(TaskDataModule):
    def __init__(self, spec: TaskSpec, dataset: InMemory, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self.spec, self.dataset = spec, dataset

    @property
    def task(self) -> TaskSpec:
        return self.spec

    def setup(self, stage: str) -> None:
        self.train_dataset = self.dataset

    def train_labels(self) -> torch.Tensor:
        return self.dataset.labels


class StepTimer(L.Callback):
    """Wall time of the steps after ``warmup``."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            _sync()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync()
        self.end = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _autocast(precision: str, device: str):
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return torch.autocast(device_type=device, enabled=False)


def plain_loop(args: argparse.Namespace, device: str) -> float:
    """Trunk images/s of a hand-written loop: torchvision ResNet + linear head, BCE, AdamW."""
    model = getattr(torchvision.models, args.trunk)(weights=None)
    model.fc = nn.Linear(model.fc.in_features, 14)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = InMemory(args.batch_size * 4, (3, args.image_size, args.image_size), 14)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    model.train()
    step, start = 0, None
    while step < args.warmup + args.steps:
        for batch in loader:
            if step == args.warmup:
                _sync()
                start = time.perf_counter()
            if step == args.warmup + args.steps:
                break
            images = batch["image"].to(device, non_blocking=True)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = batch["label"].to(device, non_blocking=True)
            with _autocast(args.precision, device):
                loss = nn.functional.binary_cross_entropy_with_logits(model(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    _sync()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def lightning_run(args: argparse.Namespace, tasks: tuple[str, ...], device: str) -> float:
    """Trunk images/s of MultiTaskModule + lightning.Trainer on the given tasks."""
    size, b = args.image_size, args.batch_size
    dms: dict[str, TaskDataModule] = {}
    trunk_images_per_step = 0
    if "disease" in tasks:
        dms["disease"] = InMemoryDataModule(disease_task(), InMemory(b * 4, (3, size, size), 14), b)
        trunk_images_per_step += b
    if "tumor" in tasks:
        # b // 3 nodules of 3 views: the trunk sees batches of the same size as in the plain loop
        nodules = max(1, b // 3)
        dms["tumor"] = InMemoryDataModule(tumor_task(), InMemory(nodules * 4, (3, 3, size, size), 1), nodules)
        trunk_images_per_step += 3 * nodules
    if "drug" in tasks:
        dms["drug"] = SyntheticDrugDataModule(num_train=b * 4, batch_size=b)
    data = MultiTaskDataModule(dms)
    module = MultiTaskModule(
        data.tasks,
        trunk=args.trunk,
        optimizer=partial(torch.optim.AdamW, lr=1e-4),
        channels_last=args.channels_last,
    )
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=data)
    return args.steps * trunk_images_per_step / (timer.end - timer.start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trunk", default="resnet50")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=12, help="trunk images per call (a multiple of 3)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs = {"plain": [], "single": [], "multi": []}
    for _ in range(args.repeats):
        runs["plain"].append(plain_loop(args, device))
        runs["single"].append(lightning_run(args, ("disease",), device))
        runs["multi"].append(lightning_run(args, ("tumor", "disease", "drug"), device))
    best = {k: max(v) for k, v in runs.items()}
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "trunk": args.trunk,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "steps": args.steps,
        "images_per_s_plain": best["plain"],
        "images_per_s_single": best["single"],
        "images_per_s_multi": best["multi"],
        "ratio_single": best["single"] / best["plain"],
        "ratio_multi": best["multi"] / best["plain"],
        "all_runs": runs,
    }
    print(f"{'run':<32}{'trunk images/s':>16}{'ratio to plain':>16}")
    print(f"{'(a) plain PyTorch loop':<32}{best['plain']:>16.1f}{1.0:>16.3f}")
    print(f"{'(b) MultiTaskModule, 1 task':<32}{best['single']:>16.1f}{result['ratio_single']:>16.3f}")
    print(f"{'(c) MultiTaskModule, 3 tasks':<32}{best['multi']:>16.1f}{result['ratio_multi']:>16.3f}")
    print("target: ratios >= 0.95 (at most 5% framework cost for the same trunk work)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
