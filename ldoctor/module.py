"""MultiTaskModule: the LightningModule that trains the shared trunk on several tasks at once."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection

from ldoctor.losses import TaskLossCallable, UncertaintyWeighting, WeightingCallable, default_task_loss
from ldoctor.metrics import MetricsCallable, prepare_for_metrics, task_metrics
from ldoctor.models.net import MultiTaskNet
from ldoctor.tasks import TaskSpec, validate_tasks

SPLITS = ("val", "test")


class MultiTaskModule(L.LightningModule):
    """Shared trunk, one head per task, masked per-task losses combined by a weighting strategy.

    Batches: training takes ``{task: task batch}`` (a ``CombinedLoader``) or a single task batch when the
    model has one task; validation/test/predict take one task batch per ``dataloader_idx`` in the order of the
    datamodule's tasks. Logged: ``train/loss`` (weighted total), ``train/loss_unweighted``,
    ``{split}/{task}/loss``, ``{split}/{task}/{metric}``, ``weights/{task}``, ``val/auroc_mean``.

    Args:
        tasks: the task specs (linked from ``data.tasks`` by the CLI; dicts are accepted from checkpoints).
        trunk: registered trunk name (``resnet50`` default, ``resnet18`` for fast runs).
        trunk_weights: ``None``, a torchvision weights enum name, or a local state-dict file.
        dropout: dropout probability in every head.
        history_embed_dim: code embedding width of the ``drug`` history encoder.
        history_hidden_dim: history encoder output width.
        optimizer: optimizer factory called with the parameter groups (AdamW: its ``weight_decay`` is the
            L2 regularisation, applied to weights only; biases, norms and weighting parameters get 0).
        lr_scheduler: optional scheduler factory called with the optimizer (stepped every epoch).
        weighting: weighting strategy class called with the task names.
        task_losses: per-task loss factories, called with the task's spec; default by kind.
        metrics: per-task metric-collection factories, called with the task's spec; default by kind.
        trunk_lr_factor: the trunk's learning rate = optimizer LR times this.
        channels_last: run the trunk in channels-last memory format (faster convolutions on GPUs).
    """

    def __init__(
        self,
        tasks: list[TaskSpec],
        trunk: str = "resnet50",
        trunk_weights: str | None = None,
        dropout: float = 0.2,
        history_embed_dim: int = 64,
        history_hidden_dim: int = 128,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        weighting: WeightingCallable = UncertaintyWeighting,
        task_losses: dict[str, TaskLossCallable] | None = None,
        metrics: dict[str, MetricsCallable] | None = None,
        trunk_lr_factor: float = 1.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        tasks = [t if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks]
        self.task_specs = validate_tasks(tasks)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "weighting", "task_losses", "metrics"])
        self.hparams["tasks"] = [asdict(t) for t in tasks]
        self.net = MultiTaskNet(tasks, trunk, trunk_weights, dropout, history_embed_dim, history_hidden_dim)
        self.net.channels_last = channels_last
        self.weighting = weighting(list(self.task_specs))
        task_losses, metrics = task_losses or {}, metrics or {}
        for name in set(task_losses) | set(metrics):
            if name not in self.task_specs:
                raise ValueError(f"task_losses/metrics name unknown task {name!r}; tasks: {list(self.task_specs)}")
        self.task_losses = nn.ModuleDict(
            {n: task_losses.get(n, default_task_loss)(spec) for n, spec in self.task_specs.items()}
        )
        self.task_metrics = nn.ModuleDict(
            {
                f"{split}_{n}": metrics.get(n, task_metrics)(spec)
                for split in SPLITS
                for n, spec in self.task_specs.items()
            }
        )
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.trunk_lr_factor = trunk_lr_factor

    # ----------------------------------------------------------------------------------- model access
    @property
    def backbone(self) -> nn.Module:
        """The shared trunk (the name Lightning's fine-tuning callbacks look for)."""
        return self.net.trunk

    @property
    def task_names(self) -> list[str]:
        return list(self.task_specs)

    def forward(self, batches: dict[str, dict]) -> dict[str, torch.Tensor]:
        """``{task: task batch}`` -> ``{task: logits}``."""
        return self.net(batches)

    def on_fit_start(self) -> None:
        if self.net.channels_last:
            self.net.trunk.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------------- training
    def _as_task_batches(self, batch: Any) -> dict[str, dict]:
        if isinstance(batch, dict) and "label" in batch:
            if len(self.task_specs) != 1:
                raise ValueError("a single task batch needs a single-task model; use MultiTaskDataModule")
            return {self.task_names[0]: batch}
        return {name: b for name, b in batch.items() if b is not None}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        losses: dict[str, torch.Tensor] = {}
        for name, task_batch in self._as_task_batches(batch).items():
            logits = self.net.forward_task(name, task_batch)
            loss = self.task_losses[name](logits, task_batch["label"])
            if loss is not None:
                losses[name] = loss
                self.log(f"train/{name}/loss", loss, batch_size=len(task_batch["label"]))
        if not losses:
            return None
        total = self.weighting(losses)
        batch_size = sum(len(b["label"]) for b in self._as_task_batches(batch).values())
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        self.log("train/loss_unweighted", torch.stack(list(losses.values())).sum().detach(), batch_size=batch_size)
        for name, weight in self.weighting.weights().items():
            self.log(f"weights/{name}", weight, batch_size=batch_size)
        return total

    # ----------------------------------------------------------------------------------- evaluation
    def _eval_task_name(self, dataloader_idx: int) -> str:
        dm = getattr(self.trainer, "datamodule", None)
        names = getattr(dm, "task_names", None) or [t.name for t in getattr(dm, "tasks", [])]
        if not names and len(self.task_specs) == 1:
            names = self.task_names
        if dataloader_idx >= len(names):
            raise RuntimeError(
                f"cannot tell which task dataloader {dataloader_idx} serves: use a DataModule with `tasks`"
            )
        return names[dataloader_idx]

    def _eval_step(self, split: str, batch: dict, dataloader_idx: int) -> None:
        name = self._eval_task_name(dataloader_idx)
        logits = self.net.forward_task(name, batch)
        loss = self.task_losses[name](logits, batch["label"])
        if loss is not None:
            self.log(f"{split}/{name}/loss", loss, batch_size=len(batch["label"]), add_dataloader_idx=False)
        prepared = prepare_for_metrics(self.task_specs[name], logits, batch["label"])
        if prepared is not None:
            self.task_metrics[f"{split}_{name}"].update(*prepared)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _log_epoch_metrics(self, split: str) -> None:
        aurocs = []
        for name in self.task_names:
            collection: MetricCollection = self.task_metrics[f"{split}_{name}"]
            if not any(m.update_called for m in collection.values()):
                continue
            for key, value in collection.compute().items():
                self.log(f"{split}/{name}/{key}", value, add_dataloader_idx=False)
                if key == "auroc" and not math.isnan(float(value)):
                    aurocs.append(float(value))
            collection.reset()
        if aurocs:
            self.log(f"{split}/auroc_mean", sum(aurocs) / len(aurocs), add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Returns ``{"task", "id", "logits", "probabilities", "label"}`` for one task batch."""
        name = self._eval_task_name(dataloader_idx)
        logits = self.net.forward_task(name, batch)
        spec = self.task_specs[name]
        probs = torch.softmax(logits, dim=1) if spec.kind == "multiclass" else torch.sigmoid(logits)
        return {"task": name, "id": batch.get("id"), "logits": logits, "probabilities": probs, "label": batch["label"]}

    # ----------------------------------------------------------------------------------- optimisation
    def _named_groups(self) -> Iterator[tuple[str, nn.Module | list[nn.Module], float]]:
        net = self.net
        yield "trunk", [net.trunk], self.trunk_lr_factor
        yield "heads", [net.heads], 1.0
        yield "history", [net.history, net.image_fusion, net.no_image], 1.0

    @staticmethod
    def split_decay(modules: list[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Trainable parameters of ``modules`` as (weights with decay, biases/norms/vectors without)."""
        decay, no_decay = [], []
        for module in modules:
            for p in module.parameters():
                if p.requires_grad:
                    (decay if p.ndim >= 2 else no_decay).append(p)
        return decay, no_decay

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups over trainable parameters: ``trunk``, ``heads``, ``history`` (each with a
        ``*_no_decay`` twin at ``weight_decay = 0``) and ``weighting`` (``weight_decay = 0``).
        Each group carries ``lr_factor``, applied to the optimizer's LR."""
        groups = []
        for name, modules, lr_factor in self._named_groups():
            decay, no_decay = self.split_decay(modules)
            if decay:
                groups.append({"params": decay, "name": name, "lr_factor": lr_factor})
            if no_decay:
                groups.append(
                    {"params": no_decay, "name": f"{name}_no_decay", "lr_factor": lr_factor, "weight_decay": 0.0}
                )
        weighting = [p for p in self.weighting.parameters() if p.requires_grad]
        if weighting:
            groups.append({"params": weighting, "name": "weighting", "lr_factor": 1.0, "weight_decay": 0.0})
        return groups

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_factor", 1.0)
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}
