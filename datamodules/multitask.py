"""Several task DataModules as one: ``{task: batch}`` for training, one loader per task for evaluation."""

from __future__ import annotations

import zlib

from lightning.pytorch.utilities import CombinedLoader

from ldoctor.datamodule import LDoctorDataModule, TaskDataModule
from ldoctor.tasks import TaskSpec, validate_tasks

TRAIN_MODES = ("max_size_cycle", "min_size", "max_size")


def task_seed(seed: int, task: str) -> int:
    """The seed of ``task``'s mixing sampler: ``seed`` and the task's name (CRC-32), not its position among the
    tasks mixed."""
    return seed * 1_000_003 + zlib.crc32(task.encode())


class MultiTaskDataModule(LDoctorDataModule):
    """Combine one DataModule per task.

    Training batches are ``{task_name: task_batch}`` from a ``CombinedLoader``; validation, test and
    predict run each task's loader in turn (``sequential``), so ``dataloader_idx`` follows ``task_names``.

    Task mixing: by default every step holds one batch of every task and an epoch follows ``mode``. Data sets
    that differ 100-fold in size are better mixed with ``steps_per_epoch``: every epoch then has exactly that
    many steps, each holding ``batch_size`` samples split across tasks in proportions ``p_t`` (drawn with
    replacement from each task's training set), where ``p_t`` is given by ``task_weights`` or by temperature
    sampling, ``p_t ~ n_t ** (1 / temperature)`` over the training set sizes ``n_t`` (1 = proportional to
    size, large = uniform over tasks).

    Args:
        datamodules: task name -> its DataModule; the name must equal ``datamodule.task.name``.
        mode: ``CombinedLoader`` mode for training without ``steps_per_epoch``: ``max_size_cycle`` (default:
            an epoch ends with the longest loader, shorter ones restart), ``min_size`` or ``max_size``.
        steps_per_epoch: fixed steps per epoch with proportional task mixing (``None``: follow ``mode``).
        batch_size: samples per step over all tasks when mixing (default: the sum of the task batch sizes).
        temperature: temperature of the size-based proportions.
        task_weights: explicit proportions (task -> weight, normalised); overrides ``temperature``.
        seed: seed of the mixing samplers (their generators run on across epochs, so epochs differ). Each task's
            sampler is seeded from ``seed`` and the task's name (:func:`task_seed`), so a task draws the same
            samples in the same order whichever other tasks are mixed with it: a single-task model and the 1v3
            model see the same batches of that task.
    """

    def __init__(
        self,
        datamodules: dict[str, TaskDataModule],
        mode: str = "max_size_cycle",
        steps_per_epoch: int | None = None,
        batch_size: int | None = None,
        temperature: float = 1.0,
        task_weights: dict[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not datamodules:
            raise ValueError("MultiTaskDataModule.datamodules is empty: give at least one task DataModule")
        if mode not in TRAIN_MODES:
            raise ValueError(f"MultiTaskDataModule.mode must be one of {TRAIN_MODES}, got {mode!r}")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"MultiTaskDataModule.steps_per_epoch must be >= 1, got {steps_per_epoch}")
        if temperature <= 0:
            raise ValueError(f"MultiTaskDataModule.temperature must be > 0, got {temperature}")
        if task_weights is not None:
            bad = {k: v for k, v in task_weights.items() if k not in datamodules or v < 0}
            if bad or sum(task_weights.values()) <= 0:
                raise ValueError(
                    f"MultiTaskDataModule.task_weights must be >= 0 for known tasks {list(datamodules)}, got {task_weights}"
                )
        self.datamodules = dict(datamodules)
        self.mode = mode
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.temperature, self.task_weights, self.seed = temperature, task_weights, seed
        for name, dm in self.datamodules.items():
            if dm.task.name != name:
                raise ValueError(
                    f"MultiTaskDataModule.datamodules[{name!r}] serves task {dm.task.name!r}: "
                    "the keys must be task names"
                )

    @property
    def tasks(self) -> list[TaskSpec]:
        specs = [dm.task for dm in self.datamodules.values()]
        validate_tasks(specs)
        return specs

    def member(self, task: str) -> TaskDataModule:
        if task not in self.datamodules:
            raise KeyError(f"MultiTaskDataModule serves tasks {list(self.datamodules)}, not {task!r}")
        return self.datamodules[task]

    def prepare_data(self) -> None:
        for dm in self.datamodules.values():
            dm.prepare_data()

    def setup(self, stage: str) -> None:
        for dm in self.datamodules.values():
            dm.setup(stage)

    def mixing_proportions(self) -> dict[str, float]:
        """Share of each task's samples per step under ``steps_per_epoch`` (needs ``setup("fit")``)."""
        if self.task_weights is not None:
            raw = {n: float(self.task_weights.get(n, 0.0)) for n in self.datamodules}
        else:
            raw = {n: len(dm.train_dataset) ** (1.0 / self.temperature) for n, dm in self.datamodules.items()}
        total = sum(raw.values())
        return {n: v / total for n, v in raw.items()}

    def mixing_batch_sizes(self) -> dict[str, int]:
        """Per-task batch sizes whose shares follow ``mixing_proportions`` (tasks with weight 0 get none)."""
        total = self.batch_size or sum(dm.batch_size for dm in self.datamodules.values())
        sizes = {n: round(p * total) for n, p in self.mixing_proportions().items()}
        return {n: max(1, b) for n, b in sizes.items() if self.mixing_proportions()[n] > 0}

    def train_dataloader(self) -> CombinedLoader:
        if self.steps_per_epoch is None:
            return CombinedLoader({n: dm.train_dataloader() for n, dm in self.datamodules.items()}, self.mode)
        loaders = {
            n: self.datamodules[n].sampled_train_dataloader(self.steps_per_epoch, b, seed=task_seed(self.seed, n))
            for n, b in self.mixing_batch_sizes().items()
        }
        return CombinedLoader(loaders, "max_size_cycle")

    def val_dataloader(self) -> CombinedLoader:
        return CombinedLoader({n: dm.val_dataloader() for n, dm in self.datamodules.items()}, "sequential")

    def test_dataloader(self) -> CombinedLoader:
        return CombinedLoader({n: dm.test_dataloader() for n, dm in self.datamodules.items()}, "sequential")

    def predict_dataloader(self) -> CombinedLoader:
        return CombinedLoader({n: dm.predict_dataloader() for n, dm in self.datamodules.items()}, "sequential")
