"""LDoctorCLI: LightningCLI for ``MultiTaskModule`` with any DataModule that exposes ``tasks``.

The task list is written once, in the data config: ``data.tasks`` is linked to ``model.tasks`` when the
DataModule is instantiated. The optimizer and scheduler are injected into the module
(``auto_configure_optimizers=False``), which builds its own parameter groups. Checkpoints are written
atomically (``ldoctor.checkpoint_io.AtomicCheckpointIO``) unless the config sets ``trainer.plugins``, and every
``--ckpt_path`` is read with ``weights_only=True``, a local file or a URL alike: a checkpoint is tensors and plain
values, never code (Lightning's own default unpickles a remote checkpoint in full, which can run code from it).

Checkpoint folders are stable across runs, so that rerunning a command with ``--ckpt_path=last`` resumes it: a
relative ``dirpath`` of a ``ModelCheckpoint`` in the config is taken under ``trainer.default_root_dir`` (the shipped
configs write to ``<default_root_dir>/checkpoints``, not into a logger's new ``version_N`` folder), and when ``fit``
starts the partial files of saves killed earlier are removed from those folders
(:func:`ldoctor.checkpoint_io.remove_stale_partials`).

W&B's console capture is off unless ``WANDB_CONSOLE`` says otherwise: what a run prints (tracebacks naming the
user's files included) stays on the user's terminal instead of going into the run folder that ``wandb sync``
uploads. What ldoctor logs itself names files and patients by pseudonym only (:mod:`ldoctor.privacy`).

From a notebook::

    from ldoctor.cli import LDoctorCLI
    cli = LDoctorCLI(args=["fit", "--config", "configs/smoke.yaml"], run=True)
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from ldoctor.checkpoint_io import checked_weights_only, remove_stale_partials
from ldoctor.errors import BadInput
from ldoctor.module import MultiTaskModule


class LDoctorCLI(LightningCLI):
    """``python train.py {fit,validate,test,predict} --config configs/<experiment>.yaml``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        os.environ.setdefault("WANDB_CONSOLE", "off")  # module docstring: printed paths stay off the upload
        kwargs.setdefault("model_class", MultiTaskModule)
        kwargs.setdefault("datamodule_class", L.LightningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("trainer_defaults", {"plugins": [{"class_path": "ldoctor.checkpoint_io.AtomicCheckpointIO"}]})
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse as Lightning does, after checking that every ``--config`` file is readable YAML: a syntax error is
        reported with the file, line and column (jsonargparse names only ``<unicode string>``)."""
        argv = sys.argv[1:] if args is None else args
        if isinstance(argv, list | tuple):
            check_config_files([str(a) for a in argv])
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.tasks", "model.tasks", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """A ``ModelCheckpoint``'s relative ``dirpath`` lives under ``trainer.default_root_dir`` (the working
        directory when that is unset, as in Lightning): ``dirpath: checkpoints`` is one folder for every run of the
        config, wherever ``--trainer.default_root_dir`` points, so ``--ckpt_path=last`` finds the last checkpoint."""
        trainer = self._get(self.config, "trainer")
        if trainer is None:
            return
        root = trainer.get("default_root_dir") or os.getcwd()
        callbacks = trainer.get("callbacks") or []
        for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
            init_args = callback.get("init_args") if hasattr(callback, "get") else None
            dirpath = init_args.get("dirpath") if init_args is not None else None
            if dirpath is None or not _is_local_file_protocol(str(dirpath)):
                continue
            dirpath = os.path.expanduser(os.fspath(dirpath))
            if not os.path.isabs(dirpath) and _is_model_checkpoint(callback.get("class_path")):
                init_args["dirpath"] = os.path.join(os.fspath(root), dirpath)

    def before_fit(self) -> None:
        """Remove the partial files killed saves left in the checkpoint folders (``.<name>.tmp-<pid>``)."""
        if not self.trainer.is_global_zero:
            return
        for callback in self.trainer.checkpoint_callbacks:
            dirpath = getattr(callback, "dirpath", None)
            if dirpath is not None and _is_local_file_protocol(str(dirpath)):
                remove_stale_partials(dirpath)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """The subcommand's arguments, with ``weights_only=True`` whatever the checkpoint path."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            kwargs["weights_only"] = checked_weights_only(kwargs.get("weights_only"), kwargs.get("ckpt_path"))
        return kwargs


def check_config_files(argv: list[str]) -> None:
    """Refuse a ``--config FILE`` (or ``--config=FILE``) that is not valid YAML, naming the file, line and column.

    Raises:
        BadInput: the file's YAML syntax error, with its position.
    """
    files = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    files += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    for name in files:
        path = Path(name).expanduser()
        if not path.is_file():
            continue  # jsonargparse reports a missing file, naming it
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err)
            raise BadInput(f"{path}{where}: {problem}; expected a YAML config file") from None
        except UnicodeDecodeError as err:
            raise BadInput(f"{path}: not UTF-8 text (byte {err.start}); expected a YAML config file") from None


def _is_model_checkpoint(class_path: Any) -> bool:
    """Whether a config's ``class_path`` names ``ModelCheckpoint`` or a subclass."""
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, ModelCheckpoint)


def main(args: list[str] | None = None) -> LDoctorCLI:
    """Entry point of ``train.py``."""
    return LDoctorCLI(args=args)
