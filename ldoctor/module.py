"""MultiTaskModule: the LightningModule that trains the shared trunk on several tasks at once."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MetricCollection

from ldoctor.losses import TaskLossCallable, UncertaintyWeighting, WeightingCallable, default_task_loss
from ldoctor.metrics import MetricsCallable, prepare_for_metrics, task_metrics
from ldoctor.models.drug_head import CopyCombine, CopyPath, DrugHead, WidePath
from ldoctor.models.net import MultiTaskNet
from ldoctor.tasks import TaskSpec, validate_tasks

SPLITS = ("val", "test")


def read_multitask_checkpoint(path: str, tasks: list[TaskSpec]) -> tuple[list[TaskSpec], dict[str, torch.Tensor]]:
    """Task specs and state dict of a MultiTaskModule checkpoint, checked against the data's ``tasks``.

    Returns:
        The checkpoint's full task list and its ``state_dict``.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: init_checkpoint not found") from err
    hparams = checkpoint.get("hyper_parameters", {})
    if "tasks" not in hparams or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a MultiTaskModule checkpoint (no task list or state_dict)")
    saved = {t["name"]: TaskSpec(**t) for t in hparams["tasks"]}
    for spec in tasks:
        if spec.name not in saved:
            raise ValueError(f"{path}: has no task {spec.name!r}; it holds {sorted(saved)}")
        if saved[spec.name] != spec:
            raise ValueError(
                f"{path}: task {spec.name!r} differs from the data's (classes, vocabulary or side features "
                "changed); fine-tuning needs the same inputs and outputs"
            )
    return list(saved.values()), checkpoint["state_dict"]


def _single_process() -> bool:
    """``distributed_available_fn`` of the module's metrics: they never sync themselves (see ``_gathered``)."""
    return False


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
        code_wide: wide path of code-input heads (``"none"``, ``"current"``, ``"all"``): a linear map of the
            multi-hot codes added to the logits (``ldoctor.models.drug_head.DrugHead``).
        code_copy: copy path of code-input heads (``"none"``, ``"last"``, ``"all"``): a learned per-drug gate
            times the earlier admissions' drugs (``M:<drug>`` codes).
        wide_dropout: dropout on the wide path's multi-hot input.
        copy_combine: ``"logit"`` (copy gate added to the logits) or ``"mixture"`` (COGNet-style mixture of the
            head's probabilities and the earlier drugs; ``ldoctor.models.drug_head.DrugHead``).
        prior_bias: tasks whose freshly initialised head bias starts at each output's training log-odds
            ``log(p / (1 - p))`` (not applied with ``init_checkpoint``, whose heads are trained already)
            with ``p`` clipped to [0.01, 0.99], read at ``setup("fit")`` from the task DataModule's
            ``label_rate()``; the untrained model then predicts the frequent outputs. A head with a copy path
            also starts its shared gate at the training repeat rate (``DrugHead.init_copy_gate`` over the
            DataModule's ``train_dataloader()``).
        optimizer: optimizer factory called with the parameter groups (AdamW: its ``weight_decay`` is the
            L2 regularisation, applied to weights only; biases, norms and weighting parameters get 0).
        lr_scheduler: optional scheduler factory called with the optimizer (stepped every epoch).
        weighting: weighting strategy class called with the task names.
        task_losses: per-task loss factories, called with the task's spec; default by kind.
        metrics: per-task metric-collection factories, called with the task's spec; default by kind.
        trunk_lr_factor: the trunk's learning rate = optimizer LR times this.
        side_lr_factor: learning rate of the heads' linear paths on side features (``TaskSpec.feature_names``,
            e.g. the tumor task's radiomics) = optimizer LR times this. They start at zero and need weights of
            order 1 on standardised features, far from where a trunk's LR moves in a short run.
        channels_last: run the trunk in channels-last memory format (faster convolutions on GPUs).
        init_checkpoint: start from the weights of this multi-task ``.ckpt`` (per-task fine-tuning). The model
            keeps the checkpoint's full task list; ``tasks`` (the data's) must be among them, and the heads of
            every other task are frozen, so they leave fine-tuning bit-identical. Not a resume: use
            ``fit --ckpt_path`` to continue an interrupted run.
    """

    def __init__(
        self,
        tasks: list[TaskSpec],
        trunk: str = "resnet50",
        trunk_weights: str | None = None,
        dropout: float = 0.2,
        history_embed_dim: int = 64,
        history_hidden_dim: int = 128,
        code_wide: WidePath = "none",
        code_copy: CopyPath = "none",
        wide_dropout: float = 0.0,
        copy_combine: CopyCombine = "logit",
        prior_bias: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        weighting: WeightingCallable = UncertaintyWeighting,
        task_losses: dict[str, TaskLossCallable] | None = None,
        metrics: dict[str, MetricsCallable] | None = None,
        trunk_lr_factor: float = 1.0,
        side_lr_factor: float = 10.0,
        channels_last: bool = False,
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        tasks = [t if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks]
        trained_tasks = list(validate_tasks(tasks))
        state = None
        if init_checkpoint is not None:
            tasks, state = read_multitask_checkpoint(init_checkpoint, tasks)
        self.task_specs = validate_tasks(tasks)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "weighting", "task_losses", "metrics"])
        self.hparams["tasks"] = [asdict(t) for t in tasks]
        self.hparams["init_checkpoint"] = None  # the weights now live in this module's own checkpoints
        self._heads_from_checkpoint = state is not None
        self.net = MultiTaskNet(
            tasks,
            trunk,
            trunk_weights,
            dropout,
            history_embed_dim,
            history_hidden_dim,
            code_wide=code_wide,
            code_copy=code_copy,
            wide_dropout=wide_dropout,
            copy_combine=copy_combine,
        )
        self.prior_bias = list(prior_bias or [])
        for name in self.prior_bias:
            if name not in self.task_specs or self.task_specs[name].kind == "multiclass":
                raise ValueError(f"prior_bias names {name!r}, not a binary/multilabel task of {list(self.task_specs)}")
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
        for collection in self.task_metrics.values():
            for metric in collection.values() if isinstance(collection, MetricCollection) else [collection]:
                # this module gathers the predictions of every process itself (``_gathered``): a metric syncing its
                # own states would wait forever on a process that saw no label of its task
                metric.distributed_available_fn = _single_process
        if state is not None:
            self._load_initial_state(state, init_checkpoint, trained_tasks)
        self._eval_outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.trunk_lr_factor = trunk_lr_factor
        self.side_lr_factor = side_lr_factor

    def _load_initial_state(self, state: dict[str, torch.Tensor], path: str, trained_tasks: list[str]) -> None:
        """Copy the net and weighting weights of a checkpoint; freeze the heads of tasks not trained now."""
        own = {k: v for k, v in state.items() if k.startswith(("net.", "weighting."))}
        missing, unexpected = self.load_state_dict(own, strict=False)
        missing = [k for k in missing if k.startswith(("net.", "weighting."))]
        if missing or unexpected:
            raise RuntimeError(f"{path}: checkpoint does not fit the model; missing {missing}, unexpected {unexpected}")
        for name in self.task_specs:
            if name not in trained_tasks:
                for container in (self.net.heads, self.net.history, self.net.image_fusion):
                    if name in container:
                        container[name].requires_grad_(False)
                if name in self.net.no_image:
                    self.net.no_image[name].requires_grad_(False)

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

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._set_auto_pos_weights()
            if not self._heads_from_checkpoint:  # a prior is a starting point, never applied to trained heads
                self._set_prior_biases()
        if self.net.channels_last:
            self.net.trunk.to(memory_format=torch.channels_last)

    def _set_auto_pos_weights(self) -> None:
        """Give losses built with ``pos_weight="auto"`` the class balance of their task's training labels."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        for name, loss in self.task_losses.items():
            if not getattr(loss, "auto_pos_weight", False):
                continue
            task_dm = getattr(dm, "datamodules", {}).get(name, dm)
            if task_dm is None or not hasattr(task_dm, "pos_weight"):
                raise ValueError(f"task {name!r} asks for pos_weight='auto' but its DataModule has no pos_weight()")
            loss.set_pos_weight(task_dm.pos_weight())
            rank_zero_info(f"{name}: pos_weight from the training labels: {loss.pos_weight.tolist()}")

    @torch.no_grad()
    def _set_prior_biases(self) -> None:
        """Set the head bias of the ``prior_bias`` tasks to the log-odds of their DataModule's ``label_rate()``."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        for name in self.prior_bias:
            task_dm = getattr(dm, "datamodules", {}).get(name, dm)
            if task_dm is None or not hasattr(task_dm, "label_rate"):
                raise ValueError(f"task {name!r} asks for prior_bias but its DataModule has no label_rate()")
            rate = torch.as_tensor(task_dm.label_rate(), dtype=torch.float).clamp(0.01, 0.99)
            bias = self.net.heads[name].linear.bias
            bias.copy_(torch.log(rate / (1 - rate)).to(bias))
            rank_zero_info(f"{name}: head bias at the training log-odds (mean rate {float(rate.mean()):.3f})")
            head = self.net.heads[name]
            if isinstance(head, DrugHead) and head.copy_gate is not None:
                gate = head.init_copy_gate(task_dm.train_dataloader())
                rank_zero_info(f"{name}: shared copy gate from the training re-admissions: {gate}")

    # ----------------------------------------------------------------------------------- training
    def _data_task_names(self) -> list[str]:
        """Task order of the attached DataModule (``task_names`` or ``tasks``); else this model's tasks."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(dm, "task_names", None) or [t.name for t in getattr(dm, "tasks", [])]
        return names or self.task_names

    def _as_task_batches(self, batch: Any) -> dict[str, dict]:
        if isinstance(batch, dict) and "label" in batch:
            names = self._data_task_names()
            if len(names) != 1:
                raise ValueError(f"got a single task batch but the data serves tasks {names}; use MultiTaskDataModule")
            return {names[0]: batch}
        return {name: b for name, b in batch.items() if b is not None}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        losses: dict[str, torch.Tensor] = {}
        unlabelled: list[torch.Tensor] = []
        batches = self._as_task_batches(batch)
        for name, task_batch in batches.items():
            logits = self.net.forward_task(name, task_batch)
            loss = self.task_losses[name](logits, task_batch["label"])
            if loss is None:
                unlabelled.append(logits)
                continue
            losses[name] = loss
            self.log(f"train/{name}/loss", loss, batch_size=len(task_batch["label"]))
        if not losses:
            return None
        total = self.weighting(losses)
        for logits in unlabelled:
            # a task without labels in this step adds exactly 0 but keeps its head in the graph, so every DDP
            # rank reduces the same parameters (plain ``ddp`` needs no ``find_unused_parameters``)
            total = total + 0.0 * logits.float().sum()
        batch_size = sum(len(b["label"]) for b in batches.values())
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        self.log("train/loss_unweighted", torch.stack(list(losses.values())).sum().detach(), batch_size=batch_size)
        for name, weight in self.weighting.weights().items():
            self.log(f"weights/{name}", weight, batch_size=batch_size)
        return total

    # ----------------------------------------------------------------------------------- evaluation
    def _eval_task_name(self, dataloader_idx: int) -> str:
        names = self._data_task_names()
        if dataloader_idx >= len(names):
            raise RuntimeError(
                f"cannot tell which task dataloader {dataloader_idx} serves: use a DataModule with `tasks`"
            )
        return names[dataloader_idx]

    def _eval_step(self, split: str, batch: dict, dataloader_idx: int) -> None:
        name = self._eval_task_name(dataloader_idx)
        logits = self.net.forward_task(name, batch)
        loss = self.task_losses[name](logits, batch["label"])
        # a batch without labels is logged with weight 0, so that every DDP process logs (and later reduces) the
        # same keys: a key logged by one process only would leave the others waiting in the epoch-end reduction
        self.log(
            f"{split}/{name}/loss",
            loss if loss is not None else logits.new_zeros((), dtype=torch.float32),
            batch_size=len(batch["label"]) if loss is not None else 0,
            add_dataloader_idx=False,
            sync_dist=True,
        )
        prepared = prepare_for_metrics(self.task_specs[name], logits, batch["label"])
        if prepared is not None:
            self._eval_outputs.setdefault(f"{split}_{name}", []).append(prepared)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _gathered(self, name: str, outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple | None:
        """This process's labelled ``(probabilities, targets)`` of task ``name`` joined with every other process's
        (all processes take part, also those without any); ``None`` when no process has any."""
        spec = self.task_specs[name]
        if outputs:
            preds, target = (torch.cat(parts) for parts in zip(*outputs))
        else:
            width = () if spec.kind == "binary" else (spec.num_outputs,)
            preds = torch.zeros((0, *width), device=self.device)
            target = torch.zeros((0, *(width if spec.kind == "multilabel" else ())), dtype=torch.long,
                                 device=self.device)
        if self.trainer.world_size == 1:
            return (preds, target) if len(target) else None
        counts = self.all_gather(torch.tensor(len(target), device=self.device)).view(-1)
        if int(counts.sum()) == 0:
            return None
        size = int(counts.max())
        padded = [torch.cat([t, t.new_zeros((size - len(t), *t.shape[1:]))]) for t in (preds, target)]
        everyone = [self.all_gather(t) for t in padded]  # [world, size, ...]
        return tuple(torch.cat([g[r, : int(n)] for r, n in enumerate(counts)]) for g in everyone)

    def _log_epoch_metrics(self, split: str) -> None:
        aurocs = []
        for name in self.task_names:
            key = f"{split}_{name}"
            gathered = self._gathered(name, self._eval_outputs.pop(key, []))
            if gathered is None:
                continue
            collection: MetricCollection = self.task_metrics[key]
            collection.update(*gathered)
            for metric, value in collection.compute().items():
                self.log(f"{split}/{name}/{metric}", value, add_dataloader_idx=False)
                if metric == "auroc" and not math.isnan(float(value)):
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
        # before "heads", which then leaves these parameters out
        yield "side_features", [h.side for h in net.heads.values() if getattr(h, "side", None) is not None], \
            self.side_lr_factor
        yield "heads", [net.heads], 1.0
        yield "history", [net.history, net.image_fusion, net.no_image], 1.0

    @staticmethod
    def split_decay(
        modules: list[nn.Module], exclude: set[int] | frozenset[int] = frozenset()
    ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Trainable parameters of ``modules`` (less those whose ``id`` is in ``exclude``) as (weights with decay,
        biases/norms/vectors without)."""
        decay, no_decay = [], []
        for module in modules:
            for p in module.parameters():
                if p.requires_grad and id(p) not in exclude:
                    (decay if p.ndim >= 2 else no_decay).append(p)
        return decay, no_decay

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups over trainable parameters: ``trunk``, ``side_features`` (the linear side paths of
        heads with ``TaskSpec.feature_names``), ``heads``, ``history`` (each with a ``*_no_decay`` twin at
        ``weight_decay = 0``) and ``weighting`` (``weight_decay = 0``). Each group carries ``lr_factor``, applied
        to the optimizer's LR."""
        groups: list[dict[str, Any]] = []
        grouped: set[int] = set()
        for name, modules, lr_factor in self._named_groups():
            decay, no_decay = self.split_decay(modules, grouped)
            grouped.update(id(p) for p in decay + no_decay)
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
