"""Training throughput: plain PyTorch loops vs MultiTaskModule under lightning.Trainer (one task, three tasks).

Every framework run has a hand-written PyTorch twin that does the same trunk work per optimizer step:

- (a) plain loop, ``disease`` only: one trunk call on ``batch_size`` radiographs, a 14-output linear head;
- (b) ``MultiTaskModule`` with the ``disease`` task: the same single trunk call;
- (a2) plain loop, three tasks: the trunk passes of (c), in the same order: one call on the ``tumor`` views
  (``batch_size // 3`` nodules x 3 views flattened into ``batch_size`` images, view features mean-pooled, a
  1-output head), one call on ``batch_size`` radiographs (14 outputs), and an embedding + GRU over ``drug`` code
  histories (8 outputs, no trunk images); the three BCE losses are summed;
- (c) ``MultiTaskModule`` with the ``tumor``, ``disease`` and ``drug`` tasks (``MultiTaskNet`` sends each image
  task's batch through the trunk in its own call, so (c) makes two trunk calls per step).

Each run does one backward and one AdamW step per step, on the same in-memory synthetic batches, trunk
(torchvision ResNet-50 by default), precision and memory format, so a ratio measures the framework's cost for
the same work: ``ratio_single`` = (b) / (a) and ``ratio_multi`` = (c) / (a2). ``ratio_multi_vs_single_pass_loop``
= (c) / (a) is kept for reference only: (c) does two trunk passes per optimizer step against (a)'s one, so the
optimizer's cost is shared over twice the images and that ratio is not like for like.

Throughput is trunk images per second (a 2.5D CT sample with 3 views counts as 3 trunk images; the drug task
adds none). The trunk calls and images per call of every run are recorded with a forward hook on the trunk
during the warm-up steps (the hook is removed before timing) and reported, so the JSON shows that each pair
does the same passes. Each run is timed over ``--steps`` steps after ``--warmup`` steps, ``--repeats`` times,
interleaved (a, b, a2, c, a, b, ...): the table reports the best repeat of each run, every repeat, and the
range of the ratios of the pairs timed side by side in the same repeat (the run-to-run noise).

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
from ldoctor.datasets.mimic import drug_task
from ldoctor.datasets.nih import disease_task
from ldoctor.datasets.synthetic import SyntheticHistories
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


#: The tasks of the one-task runs (a, b) and of the three-task runs (a2, c), in the order their batches are served.
SINGLE_TASK = ("disease",)
THREE_TASKS = ("tumor", "disease", "drug")
#: Views per 2.5D CT nodule, and the synthetic drug histories' vocabulary and drugs (the drug head's inputs/outputs).
VIEWS = 3
DRUG_VOCAB, NUM_DRUGS = 40, 8
#: The runs in the order each repeat times them: key -> (table label, "plain" or "lightning", tasks).
RUNS = {
    "plain": ("(a) plain PyTorch loop, 1 task", "plain", SINGLE_TASK),
    "single": ("(b) MultiTaskModule, 1 task", "lightning", SINGLE_TASK),
    "plain_multi": ("(a2) plain PyTorch loop, 3 tasks", "plain", THREE_TASKS),
    "multi": ("(c) MultiTaskModule, 3 tasks", "lightning", THREE_TASKS),
}
#: Reported ratios: name -> (framework run, plain-loop run it is divided by).
RATIOS = {
    "ratio_single": ("single", "plain"),
    "ratio_multi": ("multi", "plain_multi"),
    "ratio_multi_vs_single_pass_loop": ("multi", "plain"),
}


def task_data(args: argparse.Namespace, tasks: tuple[str, ...]) -> dict[str, tuple[TaskSpec, Dataset, int]]:
    """Per task (in ``tasks`` order): its spec, a training set of 4 batches and its batch size, shared by the
    plain loops and the framework runs. ``tumor`` takes ``batch_size // 3`` nodules of 3 views, so its trunk call
    sees ``batch_size`` images, like ``disease``'s."""
    size, b = args.image_size, args.batch_size
    data: dict[str, tuple[TaskSpec, Dataset, int]] = {}
    for name in tasks:
        if name == "tumor":
            nodules = b // VIEWS
            data[name] = (tumor_task(), InMemory(nodules * 4, (VIEWS, 3, size, size), 1), nodules)
        elif name == "disease":
            data[name] = (disease_task(), InMemory(b * 4, (3, size, size), 14), b)
        elif name == "drug":
            histories = SyntheticHistories(b * 4, DRUG_VOCAB, NUM_DRUGS)
            data[name] = (drug_task(histories.drug_vocabulary, histories.code_vocabulary), histories, b)
        else:
            raise ValueError(f"unknown task {name!r}")
    return data


class TrunkCalls:
    """Images per trunk call, step by step, recorded by a forward hook on ``trunk`` until :meth:`stop`."""

    def __init__(self, trunk: nn.Module) -> None:
        self.steps: list[list[int]] = []
        self._handle = trunk.register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if self.steps:
            self.steps[-1].append(int(inputs[0].shape[0]))

    def new_step(self) -> None:
        self.steps.append([])

    def stop(self) -> list[int]:
        """Remove the hook; return the images of each trunk call of one step (the same in every recorded step)."""
        self._handle.remove()
        if not self.steps or any(step != self.steps[0] for step in self.steps):
            raise RuntimeError(f"trunk calls differ between warm-up steps (or none recorded): {self.steps}")
        return self.steps[0]


class StepTimer(L.Callback):
    """Records the trunk calls of the warm-up steps, then the wall time of the steps after ``warmup``."""

    def __init__(self, warmup: int, calls: TrunkCalls) -> None:
        self.warmup, self.calls = warmup, calls
        self.start, self.end, self.images_per_call = None, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step < self.warmup:
            self.calls.new_step()
        elif trainer.global_step == self.warmup:
            self.images_per_call = self.calls.stop()
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


class PlainHistoryHead(nn.Module):
    """The drug head's work in plain torch: code embeddings summed per admission, a GRU over the admissions,
    dropout and a linear read-out of its last state."""

    def __init__(self, vocab_size: int, num_outputs: int, embed_dim: int = 64, hidden_dim: int = 128) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, embed_dim, padding_idx=0)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.readout = nn.Sequential(nn.Dropout(0.2), nn.Linear(hidden_dim, num_outputs))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        admissions = self.embedding(codes).sum(dim=2)
        lengths = (codes != 0).any(dim=2).sum(dim=1).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(admissions, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.gru(packed)
        return self.readout(state[-1])


class PlainNet(nn.Module):
    """A torchvision trunk (classifier removed) and one head per task, written without ldoctor: each image task's
    batch goes through the trunk in its own call (multi-view batches flattened, view features mean-pooled), then
    dropout and a linear layer; the drug task goes through :class:`PlainHistoryHead`."""

    def __init__(self, trunk: str, specs: dict[str, TaskSpec], channels_last: bool) -> None:
        super().__init__()
        self.trunk = getattr(torchvision.models, trunk)(weights=None)
        width = self.trunk.fc.in_features
        self.trunk.fc = nn.Identity()
        self.channels_last = channels_last
        self.heads = nn.ModuleDict({
            name: PlainHistoryHead(len(spec.code_vocabulary), spec.num_outputs) if spec.input_key == "codes"
            else nn.Sequential(nn.Dropout(0.2), nn.Linear(width, spec.num_outputs))
            for name, spec in specs.items()
        })
        self.input_keys = {name: spec.input_key for name, spec in specs.items()}

    def forward(self, batches: dict[str, dict]) -> dict[str, torch.Tensor]:
        logits = {}
        for name, batch in batches.items():
            inputs = batch[self.input_keys[name]]
            if self.input_keys[name] == "codes":
                logits[name] = self.heads[name](inputs)
                continue
            flat = inputs.flatten(0, 1) if inputs.dim() == 5 else inputs
            if self.channels_last:
                flat = flat.contiguous(memory_format=torch.channels_last)
            features = self.trunk(flat)
            if inputs.dim() == 5:
                features = features.view(*inputs.shape[:2], -1).mean(dim=1)
            logits[name] = self.heads[name](features)
        return logits


def plain_loop(args: argparse.Namespace, tasks: tuple[str, ...], device: str) -> dict:
    """A hand-written loop over ``tasks``: per step one batch of every task, the summed BCE losses, one backward
    and one AdamW step.

    Returns:
        ``images_per_s`` (trunk images per second over the timed steps), ``trunk_images_per_call`` (one step's
        trunk calls, from the warm-up steps) and ``head_outputs`` (outputs per task).
    """
    data = task_data(args, tasks)
    net = PlainNet(args.trunk, {name: spec for name, (spec, _, _) in data.items()}, args.channels_last).to(device)
    if args.channels_last:
        net.trunk.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loaders = {name: DataLoader(dataset, batch_size=size, shuffle=True) for name, (_, dataset, size) in data.items()}
    calls = TrunkCalls(net.trunk)
    net.train()
    total, step, start, images_per_call = args.warmup + args.steps, 0, None, None
    while step < total:
        for batches in zip(*loaders.values()):
            if step == total:
                break
            if step < args.warmup:
                calls.new_step()
            elif step == args.warmup:
                images_per_call = calls.stop()
                _sync()
                start = time.perf_counter()
            batches = {
                name: {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
                for name, batch in zip(loaders, batches)
            }
            with _autocast(args.precision, device):
                logits = net(batches)
                loss = sum(nn.functional.binary_cross_entropy_with_logits(logits[name].float(), batch["label"])
                           for name, batch in batches.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    _sync()
    return {
        "images_per_s": args.steps * sum(images_per_call) / (time.perf_counter() - start),
        "trunk_images_per_call": images_per_call,
        "head_outputs": {name: spec.num_outputs for name, (spec, _, _) in data.items()},
    }


def lightning_run(args: argparse.Namespace, tasks: tuple[str, ...], device: str) -> dict:
    """MultiTaskModule + lightning.Trainer on ``tasks`` (default heads, losses and uncertainty weighting).

    Returns: the same keys as :func:`plain_loop`.
    """
    dms: dict[str, TaskDataModule] = {}
    for name, (spec, dataset, size) in task_data(args, tasks).items():
        if name == "drug":
            dms[name] = SyntheticDrugDataModule(num_train=len(dataset), vocab_size=DRUG_VOCAB, num_drugs=NUM_DRUGS,
                                                batch_size=size)
        else:
            dms[name] = InMemoryDataModule(spec, dataset, size)
    data = MultiTaskDataModule(dms)
    module = MultiTaskModule(
        data.tasks,
        trunk=args.trunk,
        optimizer=partial(torch.optim.AdamW, lr=1e-4),
        channels_last=args.channels_last,
    )
    timer = StepTimer(args.warmup, TrunkCalls(module.net.trunk))
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
    return {
        "images_per_s": args.steps * sum(timer.images_per_call) / (timer.end - timer.start),
        "trunk_images_per_call": timer.images_per_call,
        "head_outputs": {name: spec.num_outputs for name, spec in module.task_specs.items()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trunk", default="resnet50", help="a torchvision ResNet (resnet18 for fast runs)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=12, help="trunk images per call (a multiple of 3)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (>= 1: they record the trunk calls)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args(argv)
    if args.batch_size < VIEWS or args.batch_size % VIEWS:
        parser.error(f"--batch-size must be a positive multiple of {VIEWS} (tumor nodules x views), got {args.batch_size}")
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
    return args


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"min": ordered[0], "median": median, "max": ordered[-1]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs: dict[str, list[float]] = {key: [] for key in RUNS}
    passes: dict[str, dict] = {}
    for _ in range(args.repeats):
        for key, (_, kind, tasks) in RUNS.items():
            record = (plain_loop if kind == "plain" else lightning_run)(args, tasks, device)
            runs[key].append(record.pop("images_per_s"))
            if passes.setdefault(key, record) != record:
                raise RuntimeError(f"{key}: trunk passes changed between repeats: {passes[key]} vs {record}")
    for name, (framework, plain) in RATIOS.items():
        if name != "ratio_multi_vs_single_pass_loop" and passes[framework] != passes[plain]:
            raise RuntimeError(f"{name}: {framework} and {plain} do different work per step: "
                               f"{passes[framework]} vs {passes[plain]}")
    best = {key: max(values) for key, values in runs.items()}
    paired = {name: [f / p for f, p in zip(runs[framework], runs[plain])] for name, (framework, plain) in RATIOS.items()}
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "trunk": args.trunk,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "protocol": (
            f"each run: {args.warmup} warm-up steps (trunk calls recorded by a hook, removed before timing), then "
            f"{args.steps} timed steps of one backward and one AdamW step; {args.repeats} interleaved repeats in the "
            f"order {', '.join(RUNS)}; images_per_s_* = best repeat; ratio_* = best / best; paired_ratios = the "
            "ratio within each repeat"
        ),
        "trunk_passes": passes,
        **{f"images_per_s_{key}": best[key] for key in RUNS},
        **{name: best[framework] / best[plain] for name, (framework, plain) in RATIOS.items()},
        "all_runs": runs,
        "spread_images_per_s": {key: _spread(values) for key, values in runs.items()},
        "paired_ratios": paired,
        "paired_ratio_range": {name: [min(values), max(values)] for name, values in paired.items()},
    }
    baseline = {"single": "ratio_single", "multi": "ratio_multi"}
    print(f"{'run':<36}{'trunk images/call':>18}{'best images/s':>15}  {'all repeats':<24}{'ratio':>7}"
          f"{'paired range':>16}")
    for key, (label, _, _) in RUNS.items():
        repeats = ", ".join(f"{v:.1f}" for v in runs[key])
        ratio, spread = (1.0, "") if key not in baseline else (
            result[baseline[key]], "{:.3f}-{:.3f}".format(*result["paired_ratio_range"][baseline[key]]))
        calls = "+".join(str(n) for n in passes[key]["trunk_images_per_call"])
        print(f"{label:<36}{calls:>18}{best[key]:>15.1f}  {repeats:<24}{ratio:>7.3f}{spread:>16}")
    print("ratio: (b) / (a) = ratio_single, (c) / (a2) = ratio_multi (best repeat / best repeat); paired range: the "
          "ratio within each repeat, min-max")
    print("(c) / (a), two trunk passes per step against one (not like for like): "
          "{:.3f} (paired {:.3f}-{:.3f})".format(result["ratio_multi_vs_single_pass_loop"],
                                                  *result["paired_ratio_range"]["ratio_multi_vs_single_pass_loop"]))
    print("target: ratio_single and ratio_multi >= 0.95 (at most 5% framework cost for the same trunk work)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
