"""LDoctorCLI: LightningCLI for ``MultiTaskModule`` with any DataModule that exposes ``tasks``.

The task list is written once, in the data config: ``data.tasks`` is linked to ``model.tasks`` when the
DataModule is instantiated. The optimizer and scheduler are injected into the module
(``auto_configure_optimizers=False``), which builds its own parameter groups. Checkpoints are written
atomically (``ldoctor.checkpoint_io.AtomicCheckpointIO``) unless the config sets ``trainer.plugins``, and every
``--ckpt_path`` is read with ``weights_only=True``, a local file or a URL alike: a checkpoint is tensors and plain
values, never code (Lightning's own default unpickles a remote checkpoint in full, which can run code from it).

From a notebook::

    from ldoctor.cli import LDoctorCLI
    cli = LDoctorCLI(args=["fit", "--config", "configs/smoke.yaml"], run=True)
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

from ldoctor.checkpoint_io import checked_weights_only
from ldoctor.module import MultiTaskModule


class LDoctorCLI(LightningCLI):
    """``python train.py {fit,validate,test,predict} --config configs/<experiment>.yaml``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", MultiTaskModule)
        kwargs.setdefault("datamodule_class", L.LightningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("trainer_defaults", {"plugins": [{"class_path": "ldoctor.checkpoint_io.AtomicCheckpointIO"}]})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.tasks", "model.tasks", apply_on="instantiate")

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """The subcommand's arguments, with ``weights_only=True`` whatever the checkpoint path."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            kwargs["weights_only"] = checked_weights_only(kwargs.get("weights_only"), kwargs.get("ckpt_path"))
        return kwargs


def main(args: list[str] | None = None) -> LDoctorCLI:
    """Entry point of ``train.py``."""
    return LDoctorCLI(args=args)
