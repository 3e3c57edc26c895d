"""Staged fine-tuning of the shared trunk: frozen at first, then unfrozen stage by stage on a schedule.

The trunk's stages are its top-level children (``stem``, ``layer1`` ... ``layer4`` for ResNets; see
``ldoctor.models.trunks``). Frozen stages keep ``requires_grad = False`` and their BatchNorm layers stay in
eval mode, so their running statistics do not drift while the heads learn. Each unfrozen stage joins the
optimizer as its own parameter groups (``trunk.{stage}`` with weight decay, ``trunk.{stage}_no_decay``
without) at ``lr = optimizer default lr * lr_factor``.

The callback's state (which stages were unfrozen, in which order, at which factor) is saved in checkpoints.
On resume the same parameter groups are rebuilt in the same order before Lightning restores the optimizer
state, so a resumed run continues with exactly the freeze state and learning rates of an uninterrupted one.

Example config::

    trainer:
      callbacks:
        - class_path: ldoctor.callbacks.StagedFinetuning
          init_args:
            schedule:
              2: {stages: [layer4], lr_factor: 0.1}
              4: {stages: [layer3, layer2], lr_factor: 0.05}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

ALL_STAGES = "all"


@dataclass
class UnfreezeStep:
    """One schedule entry.

    Args:
        stages: trunk stages to unfreeze (``"all"`` = every stage still frozen).
        lr_factor: their learning rate relative to the optimizer's default learning rate.
    """

    stages: list[str] = field(default_factory=lambda: [ALL_STAGES])
    lr_factor: float = 0.1


class StagedFinetuning(Callback):
    """Freeze the trunk at the start of training and unfreeze its stages at scheduled epochs.

    Args:
        schedule: epoch -> ``UnfreezeStep``; applied at the start of that epoch (0-based). An empty schedule
            keeps the trunk frozen for the whole run (heads-only training, e.g. per-task fine-tuning).
        freeze: trunk stages frozen when training starts (default ``["all"]``: the whole trunk). Stages not
            listed stay in the module's own ``trunk`` parameter groups.
    """

    def __init__(self, schedule: dict[int, UnfreezeStep] | None = None, freeze: list[str] | None = None) -> None:
        super().__init__()
        schedule = schedule or {}
        self.schedule = {int(e): s if isinstance(s, UnfreezeStep) else UnfreezeStep(**s) for e, s in schedule.items()}
        for epoch in self.schedule:
            if epoch < 0:
                raise ValueError(f"StagedFinetuning.schedule epochs must be >= 0, got {epoch}")
        self.freeze = list(freeze) if freeze is not None else [ALL_STAGES]
        self.unfrozen: list[dict[str, Any]] = []  # [{"epoch", "stage", "lr_factor"}] in the order applied
        self._restored: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def stages(pl_module: L.LightningModule) -> dict[str, nn.Module]:
        trunk = pl_module.backbone
        return {name: getattr(trunk, name) for name in trunk.stages}

    def frozen_at_start(self, pl_module: L.LightningModule) -> list[str]:
        stages = list(self.stages(pl_module))
        return stages if ALL_STAGES in self.freeze else [s for s in stages if s in self.freeze]

    def _check_stages(self, pl_module: L.LightningModule) -> None:
        known, frozen = set(self.stages(pl_module)), set(self.frozen_at_start(pl_module))
        unknown = set(self.freeze) - known - {ALL_STAGES}
        if unknown:
            raise ValueError(
                f"StagedFinetuning.freeze names unknown trunk stages {sorted(unknown)}; the trunk has {sorted(known)}"
            )
        for epoch, step in self.schedule.items():
            wrong = set(step.stages) - frozen - {ALL_STAGES}
            if wrong:
                raise ValueError(
                    f"StagedFinetuning.schedule[{epoch}] unfreezes {sorted(wrong)}, which are not frozen trunk stages; "
                    f"frozen at start: {sorted(frozen)}"
                )

    def frozen_stage_names(self, pl_module: L.LightningModule) -> list[str]:
        done = {u["stage"] for u in self.unfrozen}
        return [s for s in self.frozen_at_start(pl_module) if s not in done]

    def _set_frozen_bn_eval(self, pl_module: L.LightningModule) -> None:
        modules = self.stages(pl_module)
        for name in self.frozen_stage_names(pl_module):
            for m in modules[name].modules():
                if isinstance(m, _BatchNorm):
                    m.eval()

    def _add_stage_groups(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, lr_factor: float
    ) -> None:
        module = self.stages(pl_module)[stage]
        module.requires_grad_(True)
        module.train(pl_module.training)
        optimizer = trainer.optimizers[0]
        lr = optimizer.defaults["lr"] * lr_factor
        decay, no_decay = pl_module.split_decay([module])
        new_groups = [
            {"params": decay, "name": f"trunk.{stage}", "lr": lr, "lr_factor": lr_factor},
            {"params": no_decay, "name": f"trunk.{stage}_no_decay", "lr": lr, "lr_factor": lr_factor,
             "weight_decay": 0.0},
        ]
        for group in new_groups:
            if group["params"]:
                optimizer.add_param_group(group)
                for config in trainer.lr_scheduler_configs:
                    if config.scheduler.optimizer is optimizer and hasattr(config.scheduler, "base_lrs"):
                        config.scheduler.base_lrs.append(lr)

    # ------------------------------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_stages(pl_module)
        modules = self.stages(pl_module)
        for name in self.frozen_at_start(pl_module):
            modules[name].requires_grad_(False)
        self._set_frozen_bn_eval(pl_module)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rebuild the parameter groups of a restored run before Lightning loads the optimizer state."""
        if self._restored is None:
            return
        self.unfrozen = []
        for entry in self._restored:
            self._add_stage_groups(trainer, pl_module, entry["stage"], entry["lr_factor"])
            self.unfrozen.append(dict(entry))
        self._restored = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        step = self.schedule.get(epoch)
        already = any(u["epoch"] == epoch for u in self.unfrozen)
        if step is not None and not already:
            frozen = self.frozen_stage_names(pl_module)
            names = frozen if ALL_STAGES in step.stages else [s for s in step.stages if s in frozen]
            for name in names:
                self._add_stage_groups(trainer, pl_module, name, step.lr_factor)
                self.unfrozen.append({"epoch": epoch, "stage": name, "lr_factor": step.lr_factor})
        self._set_frozen_bn_eval(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"unfrozen": [dict(u) for u in self.unfrozen]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = [dict(u) for u in state_dict.get("unfrozen", [])]
        self.unfrozen = list(self._restored)
