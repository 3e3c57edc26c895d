"""OperatingPoints: calibration and operating thresholds fitted on every validation, saved in every checkpoint.

After each validation epoch (not the sanity check) this callback fits, per binary or multilabel task, a calibration of
the validation logits (:class:`~ldoctor.evaluation.calibration.Calibration`), then per output column the operating
threshold (:func:`~ldoctor.evaluation.calibration.choose_threshold`) and the validation curve of threshold,
sensitivity and specificity (:func:`~ldoctor.evaluation.calibration.operating_curve`) on the calibrated
probabilities. Its state is these results, so every checkpoint carries the operating points of its own weights;
:func:`read_operating_points` reads them from a loaded ``.ckpt`` without the callback (a report, a demo).

Example (CLI):
    python train.py fit --config configs/chestxray14.yaml --trainer.callbacks+=ldoctor.callbacks.OperatingPoints
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ldoctor.callbacks.feature_stacking import binary_labels
from ldoctor.errors import BadInput
from ldoctor.evaluation.calibration import METHODS, CalibrationMethod, check_rule, fit_operating_points
from ldoctor.module import MultiTaskModule, gather_rows

#: The callback's key in a checkpoint's ``"callbacks"`` (Lightning's ``Callback.state_key``: the class name).
STATE_KEY = "OperatingPoints"
STATE_VERSION = 1
CALIBRATED_KINDS = ("binary", "multilabel")


def read_operating_points(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The :class:`OperatingPoints` state of a loaded checkpoint (``torch.load(path, weights_only=True)``).

    Returns:
        ``{"version": 1, "epoch", "rule", "tasks": {task: {"calibration", "class_names", "columns", "ece_before",
        "ece_after", "n"}}}`` (see :class:`OperatingPoints`), or ``None`` when the checkpoint has none (trained
        without the callback, or saved before its first validation).

    Raises:
        BadInput: the state is there but of another version.
    """
    callbacks = checkpoint.get("callbacks")
    state = callbacks.get(STATE_KEY) if isinstance(callbacks, dict) else None
    if state is None:
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise BadInput(f"checkpoint['callbacks'][{STATE_KEY!r}] has version {found!r}, this ldoctor reads version "
                       f"{STATE_VERSION}; refit the operating points (trainer.validate with OperatingPoints)")
    return state


class OperatingPoints(Callback):
    """Fit calibration, operating thresholds and validation curves per task on each validation epoch.

    Needs a :class:`~ldoctor.module.MultiTaskModule`, whose ``validation_step`` returns ``{"task", "logits",
    "label"}`` (received here as ``outputs``). Multiclass tasks are left out: a softmax has no per-column threshold.
    Soft binary labels are hardened as :func:`~ldoctor.callbacks.feature_stacking.binary_labels` does (0.5 and NaN
    unknown). Under DDP the validation logits of every process are gathered first, so every process fits the same
    result (a ``DistributedSampler`` repeats a few cases to even out the processes, as for the module's metrics).

    Logged: ``val/{task}/ece`` and ``val/{task}/ece_calibrated``, the mean over the task's columns of the expected
    calibration error before and after calibration. The calibration, thresholds and ``ece_calibrated`` are fitted and
    measured on the same validation cases: ``ece_calibrated`` is in-sample (optimistic); measure it on the test split.

    State (``state_dict``, saved in every checkpoint under ``checkpoint["callbacks"]["OperatingPoints"]``, plain
    types only)::

        {"version": 1, "epoch": n, "rule": "youden",
         "tasks": {task: {"calibration": Calibration.to_dict(), "class_names": [K names],
                          "columns": [{"name", "threshold", "sensitivity", "specificity",
                                       "curve": [[threshold, sensitivity, specificity], ...], "reason"}],
                          "ece_before": [K], "ece_after": [K], "n": labelled validation cases}}}

    ``threshold``, ``sensitivity`` and ``specificity`` are ``None`` (``curve`` empty) with a ``reason`` for a column
    whose validation labels hold one class only; an ECE is ``None`` for a column without labels.

    Args:
        tasks: the tasks to fit (binary or multilabel); ``None``: every binary and multilabel task of the model.
        method: calibration, ``"temperature"`` (one temperature per column), ``"isotonic"`` or ``"none"``.
        rule: ``"youden"`` or ``"sensitivity:S"`` (:func:`~ldoctor.evaluation.calibration.choose_threshold`).
        points: rows of each validation curve, at most.
    """

    def __init__(self, tasks: list[str] | None = None, method: CalibrationMethod = "temperature",
                 rule: str = "youden", points: int = 41) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"OperatingPoints.method must be one of {METHODS}, got {method!r}")
        check_rule(rule)
        if points < 2:
            raise ValueError(f"OperatingPoints.points must be >= 2, got {points}")
        self.tasks, self.method, self.rule, self.points = tasks, method, rule, points
        self.results: dict[str, Any] = {}
        self._selected: list[str] = []
        self._batches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def task_names(self, pl_module: L.LightningModule) -> list[str]:
        """The tasks to fit, in the model's order (the same on every process)."""
        if not isinstance(pl_module, MultiTaskModule):
            raise TypeError(f"OperatingPoints needs a MultiTaskModule, got {type(pl_module).__name__}")
        specs = pl_module.task_specs
        if self.tasks is None:
            return [name for name, spec in specs.items() if spec.kind in CALIBRATED_KINDS]
        for name in self.tasks:
            if name not in specs:
                raise ValueError(f"OperatingPoints.tasks names {name!r}, the model's tasks are {list(specs)}")
            if specs[name].kind not in CALIBRATED_KINDS:
                raise ValueError(f"OperatingPoints: task {name!r} is {specs[name].kind}; only binary and multilabel "
                                 "tasks have per-column thresholds")
        return [name for name in specs if name in self.tasks]

    # ------------------------------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._selected = self.task_names(pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = {}

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking:
            return
        if not isinstance(outputs, dict) or not {"task", "logits", "label"} <= outputs.keys():
            raise TypeError("OperatingPoints needs validation_step to return {'task', 'logits', 'label'} "
                            f"(MultiTaskModule does), got {type(outputs).__name__}")
        if outputs["task"] in self._selected:
            logits = outputs["logits"].detach().float()
            self._batches.setdefault(outputs["task"], []).append((logits, outputs["label"].float().view_as(logits)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        tasks: dict[str, Any] = {}
        for name in self._selected:
            gathered = self._gathered(pl_module, name)
            if gathered is None:
                continue
            logits, labels = (t.cpu().double().numpy() for t in gathered)
            kept, hard = binary_labels(labels)
            tasks[name] = fit_operating_points(logits, np.where(kept, hard, np.nan),
                                               pl_module.task_specs[name].class_names, self.method, self.rule,
                                               self.points)
            for key, values in (("ece", tasks[name]["ece_before"]), ("ece_calibrated", tasks[name]["ece_after"])):
                defined = [v for v in values if v is not None]
                if defined:
                    pl_module.log(f"val/{name}/{key}", float(np.mean(defined)), add_dataloader_idx=False,
                                  sync_dist=True)
        self._batches = {}
        self.results = {"version": STATE_VERSION, "epoch": trainer.current_epoch, "rule": self.rule, "tasks": tasks}

    def _gathered(self, pl_module: MultiTaskModule, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This process's ``[n, K]`` logits and labels of task ``name`` joined with every other process's (all take
        part, also those without a batch of it); ``None`` when no process has any."""
        width, parts = pl_module.task_specs[name].num_outputs, self._batches.pop(name, [])
        if parts:
            logits, labels = (torch.cat(p) for p in zip(*parts))
        else:
            logits = labels = torch.zeros((0, width), device=pl_module.device)
        gathered = gather_rows(pl_module, logits, labels)
        return None if gathered is None else (gathered[0], gathered[1])

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The last validation's results (empty before the first): plain types, see the class docstring."""
        return dict(self.results)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("version") != STATE_VERSION:
            raise BadInput(f"OperatingPoints state of version {state_dict.get('version')!r}, expected {STATE_VERSION}")
        self.results = dict(state_dict)
