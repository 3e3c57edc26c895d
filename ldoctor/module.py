"""MultiTaskModule: the LightningModule that trains the shared trunk on several tasks at once."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MetricCollection

from ldoctor.checkpoint_io import checked_weights_only, load_tensors
from ldoctor.config import factory_config, is_plain
from ldoctor.datamodule import LDoctorDataModule
from ldoctor.errors import BadInput
from ldoctor.losses import TaskLoss, TaskLossCallable, UncertaintyWeighting, WeightingCallable, default_task_loss
from ldoctor.metrics import MetricsCallable, prepare_for_metrics, task_metrics
from ldoctor.models.heads import HeadCallable, build_heads
from ldoctor.models.net import MultiTaskNet
from ldoctor.models.trunks import TrunkCallable, build_trunk
from ldoctor.tasks import TaskSpec, validate_tasks

SPLITS = ("val", "test")


#: What an ``init_checkpoint`` is, for messages.
EXPECTED_CHECKPOINT = "a Lightning checkpoint of a MultiTaskModule (a .ckpt written by ldoctor's fit)"
#: The parts of a MultiTaskModule's state an ``init_checkpoint`` carries, by state-dict key prefix.
CHECKPOINT_PARTS = {"trunk": "net.trunk.", "heads": "net.heads.", "weighting": "weighting."}


@dataclass
class MultiTaskCheckpoint:
    """What a MultiTaskModule checkpoint holds for ``init_checkpoint`` (:func:`read_multitask_checkpoint`).

    Attributes:
        path: the file.
        tasks: its full task list.
        state_dict: its weights (``net.trunk.*``, ``net.heads.<task>.*``, ``weighting.*``, ...).
        trunk: the trunk it was trained with, as its config says (a registered name or a class path).
        weighting: the weighting strategy's class name (``"UncertaintyWeighting"``); ``None`` when not recorded.
    """

    path: str
    tasks: list[TaskSpec]
    state_dict: dict[str, torch.Tensor]
    trunk: str
    weighting: str | None


def describe_factory(config: Any) -> str:
    """A factory's config as one short string: a registered name, or a class path with its ``init_args``."""
    if isinstance(config, dict) and "class_path" in config:
        args = config.get("init_args") or {}
        return config["class_path"] + (f"({', '.join(f'{k}={v!r}' for k, v in args.items())})" if args else "")
    return str(config) if config is not None else "not recorded"


def _class_name(config: Any) -> str | None:
    """The class name of a factory config (``{"class_path": "a.b.C"}`` or ``"a.b.C"``), ``None`` when not recorded."""
    path = config.get("class_path") if isinstance(config, dict) else config
    return str(path).rsplit(".", 1)[-1] if path else None


def _spec_difference(saved: TaskSpec, spec: TaskSpec) -> str:
    """The fields of two task specs that differ: ``num_outputs 20 vs 5, class_names``."""
    a, b = asdict(saved), asdict(spec)
    return ", ".join(f"{k} {a[k]!r} in the checkpoint, {b[k]!r} in the data" if not isinstance(a[k], (list, tuple))
                     else k for k in a if a[k] != b[k])


def read_multitask_checkpoint(path: str, tasks: list[TaskSpec]) -> MultiTaskCheckpoint:
    """Task specs, weights, trunk and weighting of a MultiTaskModule checkpoint, its tasks checked against the data's.

    Every task of the data must be one of the checkpoint's, with the same spec: ``init_checkpoint`` fine-tunes the
    checkpoint's own tasks (the model keeps its full task list; see :class:`MultiTaskModule`).

    Raises:
        FileNotFoundError: no such file. BadInput: an empty, truncated or damaged file, or one that is not a
            MultiTaskModule checkpoint (no ``state_dict`` or task list); a task of the data missing from it or with
            another spec (naming the file, the task and what differs).
    """
    checkpoint = load_tensors(path, EXPECTED_CHECKPOINT)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "tasks" not in hparams or not isinstance(checkpoint.get("state_dict"), dict):
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise BadInput(f"{path}: not a MultiTaskModule checkpoint (no state_dict or no task list in its "
                       f"hyper_parameters; found {found}); expected {EXPECTED_CHECKPOINT}")
    try:
        saved = {t["name"]: TaskSpec(**t) for t in hparams["tasks"]}
    except (TypeError, KeyError) as err:
        raise BadInput(f"{path}: its task list cannot be read ({err}); expected {EXPECTED_CHECKPOINT}") from None
    for spec in tasks:
        if spec.name not in saved:
            raise BadInput(f"{path}: has no task {spec.name!r}, it holds {sorted(saved)}; expected a checkpoint "
                           "trained on every task of the data (init_checkpoint fine-tunes the checkpoint's own "
                           "tasks; a new task trains without it)")
        if saved[spec.name] != spec:
            raise BadInput(
                f"{path}: task {spec.name!r} differs from the data's ({_spec_difference(saved[spec.name], spec)}: "
                "classes, vocabulary or side features changed); fine-tuning needs the same inputs and outputs"
            )
    return MultiTaskCheckpoint(str(path), list(saved.values()), checkpoint["state_dict"],
                               describe_factory(hparams.get("trunk")), _class_name(hparams.get("weighting")))


def _mismatch(given: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], prefix: str) -> str:
    """The keys under ``prefix`` that keep ``given`` from loading into ``expected`` (``""`` when it fits)."""
    given = {k: v for k, v in given.items() if k.startswith(prefix)}
    expected = {k: v for k, v in expected.items() if k.startswith(prefix)}
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    shapes = sorted(f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
                    for k in given.keys() & expected.keys() if given[k].shape != expected[k].shape)
    parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
             for what, keys in (("keys the checkpoint lacks", missing), ("keys this model lacks", unexpected),
                                ("wrong shapes, checkpoint vs model", shapes)) if keys]
    return "; ".join(parts)


def gather_rows(module: L.LightningModule, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """Every process's rows of ``tensors`` (same length on one process, any length across processes), joined in
    rank order; all processes must call it, also those with no rows. ``None`` when no process has any.

    ``all_gather`` needs equal shapes, so each process pads to the longest and the padding is cut off again.
    """
    if module.trainer.world_size == 1:
        return tensors if len(tensors[0]) else None
    counts = module.all_gather(torch.tensor(len(tensors[0]), device=module.device)).view(-1)
    if int(counts.sum()) == 0:
        return None
    size = int(counts.max())
    padded = [torch.cat([t, t.new_zeros((size - len(t), *t.shape[1:]))]) for t in tensors]
    everyone = [module.all_gather(t) for t in padded]  # [world, size, ...]
    return tuple(torch.cat([g[r, : int(n)] for r, n in enumerate(counts)]) for g in everyone)


def _single_process() -> bool:
    """``distributed_available_fn`` of the module's metrics: they never sync themselves (see ``_gathered``)."""
    return False


class MultiTaskModule(L.LightningModule):
    """Shared trunk, one head per task, masked per-task losses combined by a weighting strategy.

    Batches: training takes ``{task: task batch}`` (a ``CombinedLoader``) or a single task batch when the
    model has one task; validation/test/predict take one task batch per ``dataloader_idx`` in the order of the
    DataModule's ``tasks``. Logged: ``train/loss`` (weighted total), ``train/loss_unweighted``,
    ``{split}/{task}/loss``, ``{split}/{task}/{metric}``, ``weights/{task}``, ``val/auroc_mean`` (over the tasks
    whose AUROC is defined: an AUROC on labels of one class only is NaN, left out, and warned about).

    Nothing here is specific to a task: heads, losses and metrics are injected per task, each with a default by
    the task's kind and input. What they need from the data comes through one hook, ``init_from_data``, called
    once when ``fit`` starts with the task's :class:`~ldoctor.datamodule.TaskDataModule` (heads: e.g. a prior bias;
    losses: e.g. ``pos_weight="auto"``).

    Args:
        tasks: the task specs (linked from ``data.tasks`` by the CLI; dicts are accepted from checkpoints).
        heads: per-task head factories, called with the task's spec and the trunk's feature width
            (:class:`~ldoctor.models.heads.TaskHead` subclasses; in a config ``model.heads.<task>`` with
            ``class_path`` and ``init_args``); default :func:`~ldoctor.models.heads.default_head`.
        trunk: registered trunk name (``resnet50`` default, ``resnet18`` for fast runs, ``densenet121``;
            :mod:`ldoctor.models.trunks`), or a factory of a :class:`~ldoctor.models.trunks.Trunk` of your own
            (``class_path`` in a config).
        trunk_weights: ``None``, a torchvision weights enum name, or a local state-dict file.
        optimizer: optimizer factory called with the parameter groups (AdamW: its ``weight_decay`` is the
            L2 regularisation, applied to weights only; biases, norms and weighting parameters get 0).
        lr_scheduler: optional scheduler factory called with the optimizer (stepped every epoch).
        weighting: weighting strategy class called with the task names.
        task_losses: per-task loss factories, called with the task's spec; default by kind.
        metrics: per-task metric-collection factories, called with the task's spec; default by kind.
        trunk_lr_factor: the trunk's learning rate = optimizer LR times this.
        channels_last: run the trunk in channels-last memory format (faster convolutions on GPUs).
        init_checkpoint: start from the weights of this multi-task ``.ckpt`` (per-task fine-tuning). The model
            keeps the checkpoint's full task list; ``tasks`` (the data's) must be among them, and the heads of
            every other task are frozen, so they leave fine-tuning bit-identical. Not a resume: use
            ``fit --ckpt_path`` to continue an interrupted run. The trunk and heads must be configured as when the
            checkpoint was trained (else a :class:`~ldoctor.errors.BadInput` names the file, its trunk and this
            model's); a checkpoint of another weighting strategy loads without its weighting state, with a warning.
            A task of the data that the checkpoint lacks is refused: a new task trains without ``init_checkpoint``.
    """

    def __init__(
        self,
        tasks: list[TaskSpec],
        heads: dict[str, HeadCallable] | None = None,
        trunk: str | TrunkCallable = "resnet50",
        trunk_weights: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        weighting: WeightingCallable = UncertaintyWeighting,
        task_losses: dict[str, TaskLossCallable] | None = None,
        metrics: dict[str, MetricsCallable] | None = None,
        trunk_lr_factor: float = 1.0,
        channels_last: bool = False,
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        tasks = [t if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks]
        self.trained_tasks = list(validate_tasks(tasks))
        initial = None
        if init_checkpoint is not None:
            initial = read_multitask_checkpoint(init_checkpoint, tasks)
            tasks = initial.tasks
        self.task_specs = validate_tasks(tasks)
        self._save_config(tasks, trunk, heads, weighting, task_losses, metrics)
        self._heads_trained = initial is not None  # priors are starting points, never applied to trained heads
        heads, task_losses, metrics = heads or {}, task_losses or {}, metrics or {}
        for name in set(heads) | set(task_losses) | set(metrics):
            if name not in self.task_specs:
                raise ValueError(f"heads/task_losses/metrics name unknown task {name!r}; tasks: {list(self.task_specs)}")
        trunk_module = build_trunk(trunk, trunk_weights)
        self.net = MultiTaskNet(trunk_module, build_heads(self.task_specs, heads, trunk_module.out_features),
                                channels_last)
        self.weighting = weighting(list(self.task_specs))
        self.weighting.attach(self.net.trunk)
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
        if initial is not None:
            self._load_initial_state(initial)
        self._eval_outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.trunk_lr_factor = trunk_lr_factor

    def _save_config(self, tasks: list[TaskSpec], *factories: Any) -> None:
        """Hyperparameters that rebuild this model from its checkpoint alone (``load_from_checkpoint(path)``): the
        task specs and the heads, weighting, losses and metrics as config (:mod:`ldoctor.config`); the optimizer and
        scheduler are training state, not the model."""
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        for name, value in zip(("trunk", "heads", "weighting", "task_losses", "metrics"), factories):
            if is_plain(self.hparams.get(name)):
                continue  # already config: the CLI's, as it parsed it
            config = factory_config(value)
            if config is None:
                del self.hparams[name]  # not describable as config: pass it to load_from_checkpoint again
            else:
                self.hparams[name] = config
        self.hparams["tasks"] = [asdict(t) for t in tasks]
        self.hparams["init_checkpoint"] = None  # the weights now live in this module's own checkpoints
        # rebuild through jsonargparse, as the CLI does (one of Lightning's allow-listed instantiators)
        self.hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"

    def _load_initial_state(self, checkpoint: MultiTaskCheckpoint) -> None:
        """Copy the trunk, heads and (same strategy only) weighting weights of a checkpoint; freeze the heads of tasks
        not trained now.

        A checkpoint of another weighting strategy loads without its weighting state (which means nothing to this
        one), with a warning naming both. A trunk or heads that do not fit (another architecture, other head
        options) are a :class:`BadInput` naming the file, what it holds and what this model is.
        """
        path, ours = checkpoint.path, type(self.weighting).__name__
        state = {k: v for k, v in checkpoint.state_dict.items() if k.startswith(("net.", "weighting."))}
        expected = {k: v for k, v in self.state_dict().items() if k.startswith(("net.", "weighting."))}
        if checkpoint.weighting is not None:
            other_strategy = checkpoint.weighting != ours
        else:  # not recorded (a factory not describable as config): its state tells
            other_strategy = bool(_mismatch(state, expected, CHECKPOINT_PARTS["weighting"]))
        if other_strategy:
            rank_zero_warn(f"{path}: trained with the {checkpoint.weighting or 'unrecorded'} weighting, this run uses "
                           f"{ours}: the trunk and heads are loaded, the weighting state is not (it starts afresh)")
            state, expected = ({k: v for k, v in d.items() if not k.startswith(CHECKPOINT_PARTS["weighting"])}
                               for d in (state, expected))
        self._check_fits(checkpoint, state, expected)
        self.load_state_dict(state, strict=False)
        for name, head in self.net.heads.items():
            if name not in self.trained_tasks:
                head.requires_grad_(False)

    def _check_fits(self, checkpoint: MultiTaskCheckpoint, state: dict[str, torch.Tensor],
                    expected: dict[str, torch.Tensor]) -> None:
        """Raise :class:`BadInput` unless ``state`` loads into ``expected`` key for key and shape for shape."""
        path = checkpoint.path
        trunk = _mismatch(state, expected, CHECKPOINT_PARTS["trunk"])
        if trunk:
            ours = describe_factory(self.hparams.get("trunk", type(self.net.trunk).__name__))
            raise BadInput(f"{path}: its trunk ({checkpoint.trunk}) does not fit this model's trunk ({ours}): {trunk}; "
                           "expected a checkpoint of the same trunk: set model.trunk as when it was trained")
        heads = [name for name in self.task_specs if _mismatch(state, expected, f"net.heads.{name}.")]
        if heads:
            details = _mismatch(state, expected, CHECKPOINT_PARTS["heads"])
            raise BadInput(f"{path}: the heads of {heads} do not fit this model's: {details}; expected the heads "
                           "configured as when the checkpoint was trained (model.heads)")
        rest = _mismatch(state, expected, "")
        if rest:
            raise BadInput(f"{path}: does not fit this model: {rest}; expected {EXPECTED_CHECKPOINT} of this model's "
                           "configuration")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A model loaded from a checkpoint (``load_from_checkpoint``, a resumed fit) has trained heads."""
        self._heads_trained = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also save how each task's data were read (``"ldoctor_inference"``: the DataModule's
        ``inference_settings()``, so a report reads a new case the same way) and the last validation metrics
        (``"ldoctor_validation"``: ``val/...`` as floats, NaN = undefined); plain values only."""
        dm = self._datamodule()
        if dm is not None and self.trainer.state.fn == "fit":
            settings = {}
            for name in dm.task_names:
                settings[name] = dict(dm.member(name).inference_settings())
            checkpoint["ldoctor_inference"] = settings
        metrics = self.trainer.callback_metrics if self._trainer is not None else {}
        checkpoint["ldoctor_validation"] = {k: float(v) for k, v in metrics.items()
                                            if k.startswith("val/") and torch.as_tensor(v).numel() == 1}

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None, strict: bool | None = None,
        weights_only: bool | None = True, **kwargs: Any,
    ) -> MultiTaskModule:
        """Lightning's ``load_from_checkpoint`` with ``weights_only=True`` whatever the path (a URL too): the file
        is read as tensors and plain values, never as code; asking for a full unpickle is refused."""
        checked_weights_only(weights_only, checkpoint_path)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=True, **kwargs)

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
            self._init_from_data()
        if self.net.channels_last:
            self.net.trunk.to(memory_format=torch.channels_last)

    def _datamodule(self) -> LDoctorDataModule | None:
        """The trainer's DataModule when it follows the data contract (:mod:`ldoctor.datamodule`)."""
        dm = self._trainer.datamodule if self._trainer is not None else None
        if dm is not None and not isinstance(dm, LDoctorDataModule):
            raise TypeError(f"MultiTaskModule needs a DataModule derived from ldoctor.datamodule.LDoctorDataModule "
                            f"(a TaskDataModule or MultiTaskDataModule), got {type(dm).__name__}")
        return dm

    def _init_from_data(self) -> None:
        """The one place data-derived initialisation happens: each task's loss and (freshly built) head get
        ``init_from_data`` with the task's TaskDataModule."""
        data = self._datamodule()
        if data is None:
            rank_zero_warn("MultiTaskModule.fit without a DataModule: data-derived initialisation (head priors, "
                           "pos_weight='auto') is skipped")
            return
        for name in data.task_names:
            member = data.member(name)
            loss = self.task_losses[name]
            if isinstance(loss, TaskLoss):
                loss.init_from_data(member)
            if not self._heads_trained:
                self.net.heads[name].init_from_data(member)

    # ----------------------------------------------------------------------------------- training
    def _data_task_names(self) -> list[str]:
        """Task order of the attached DataModule; this model's tasks without one."""
        data = self._datamodule()
        return data.task_names if data is not None else self.task_names

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

    def on_train_epoch_end(self) -> None:
        self.weighting.epoch_end()

    # ----------------------------------------------------------------------------------- evaluation
    def task_for_dataloader(self, dataloader_idx: int) -> str:
        """The task an evaluation / predict loader serves (the DataModule's task order)."""
        names = self._data_task_names()
        if dataloader_idx >= len(names):
            raise RuntimeError(
                f"cannot tell which task dataloader {dataloader_idx} serves: use a DataModule with `tasks`"
            )
        return names[dataloader_idx]

    def _eval_step(self, split: str, batch: dict, dataloader_idx: int) -> dict[str, Any]:
        """Log the batch's loss, keep its predictions for the epoch's metrics, and return ``{"task": name,
        "logits": [B, num_outputs] (detached), "label": the batch's labels ([B, num_outputs] or [B], NaN =
        unknown)}``: what callbacks receive as ``outputs`` in ``on_validation_batch_end`` / ``on_test_batch_end``
        (e.g. :class:`~ldoctor.callbacks.OperatingPoints`); Lightning keeps no evaluation outputs itself."""
        name = self.task_for_dataloader(dataloader_idx)
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
        return {"task": name, "logits": logits.detach(), "label": batch["label"]}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"task", "logits", "label"}`` of the batch (see ``_eval_step``)."""
        return self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"task", "logits", "label"}`` of the batch (see ``_eval_step``)."""
        return self._eval_step("test", batch, dataloader_idx)

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
        return gather_rows(self, preds, target)

    def _log_epoch_metrics(self, split: str) -> None:
        """Log each task's metrics and ``{split}/auroc_mean``, the mean over the tasks whose AUROC is defined.

        An undefined AUROC (the task's labels hold one class only) is logged as NaN, left out of the mean, with a
        warning naming the task (not for the few batches of the sanity check); the mean is NaN when no task's AUROC
        is defined (``ModelCheckpoint`` ranks NaN last).
        """
        aurocs, undefined = [], []
        for name in self.task_names:
            key = f"{split}_{name}"
            gathered = self._gathered(name, self._eval_outputs.pop(key, []))
            if gathered is None:
                continue
            collection: MetricCollection = self.task_metrics[key]
            collection.update(*gathered)
            for metric, value in collection.compute().items():
                self.log(f"{split}/{name}/{metric}", value, add_dataloader_idx=False)
                if metric == "auroc":
                    (undefined if math.isnan(float(value)) else aurocs).append((name, float(value)))
            collection.reset()
        sanity_check = self._trainer is not None and self.trainer.sanity_checking
        for name, _ in [] if sanity_check else undefined:
            rank_zero_warn(
                f"{split}/{name}/auroc is undefined: the {split} labels of task {name!r} hold one class only (for "
                f"several labels or classes: none holds both); logged as NaN and left out of {split}/auroc_mean"
            )
        if aurocs or undefined:
            mean = sum(v for _, v in aurocs) / len(aurocs) if aurocs else float("nan")
            self.log(f"{split}/auroc_mean", mean, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Returns ``{"task", "id", "logits", "probabilities", "label"}`` for one task batch."""
        name = self.task_for_dataloader(dataloader_idx)
        logits = self.net.forward_task(name, batch)
        spec = self.task_specs[name]
        probs = torch.softmax(logits, dim=1) if spec.kind == "multiclass" else torch.sigmoid(logits)
        return {"task": name, "id": batch.get("id"), "logits": logits, "probabilities": probs, "label": batch["label"]}

    # ----------------------------------------------------------------------------------- optimisation
    def _named_groups(self) -> Iterator[tuple[str, list[nn.Module], float]]:
        yield "trunk", [self.net.trunk], self.trunk_lr_factor
        # the heads' own groups (``TaskHead.lr_groups``) before "heads", which then leaves their parameters out
        own: dict[tuple[str, float], list[nn.Module]] = {}
        for head in self.net.heads.values():
            for name, module, lr_factor in head.lr_groups():
                own.setdefault((name, lr_factor), []).append(module)
        for (name, lr_factor), modules in own.items():
            yield name, modules, lr_factor
        yield "heads", [self.net.heads], 1.0

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
        """Optimizer groups over trainable parameters: ``trunk``, the heads' own groups (``TaskHead.lr_groups``, e.g.
        ``side_features``), ``heads`` (each with a ``*_no_decay`` twin at ``weight_decay = 0``) and ``weighting``
        (``weight_decay = 0``). Each group carries ``lr_factor``, applied to the optimizer's LR."""
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
