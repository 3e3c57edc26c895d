"""What a report needs from a checkpoint besides the weights: tasks, input settings, operating points, model card.

A checkpoint written by ``train.py fit`` holds, next to Lightning's keys:

- ``hyper_parameters["tasks"]``: the task specs (:class:`~ldoctor.tasks.TaskSpec` as dicts);
- ``"ldoctor_inference"``: per task, how its DataModule turned files into model inputs
  (:meth:`ldoctor.datamodule.TaskDataModule.inference_settings`: ``"input"`` = ``"ct_nodule"``, ``"radiograph"``
  or ``"history"`` with the patch / image settings), so a case is read exactly as the training data were;
- ``"ldoctor_validation"``: the last validation metrics (``val/...``);
- the :class:`~ldoctor.callbacks.OperatingPoints` state (calibration, thresholds, curves) when that callback ran.

The file is read with ``weights_only=True``: tensors and plain values only, never code.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ldoctor.errors import BadInput
from ldoctor.tasks import TaskSpec

INFERENCE_KEY, VALIDATION_KEY = "ldoctor_inference", "ldoctor_validation"
#: Validation metrics a model card shows (per-class AUROCs and counts stay in the training logs).
CARD_METRICS = ("auroc", "accuracy", "f1", "sensitivity", "specificity", "jaccard", "prauc", "ece", "ece_calibrated")


def file_version(path: str | Path) -> str:
    """``sha256:<first 16 hex>`` of a file's bytes: the model version a report names."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


@dataclass
class ModelInfo:
    """A checkpoint's report-relevant content.

    Attributes:
        path: the checkpoint file.
        version: :func:`file_version` of it.
        tasks: the task specs, in the model's order.
        settings: per task, :meth:`~ldoctor.datamodule.TaskDataModule.inference_settings` at training time.
        points: per task, the operating points (calibration, thresholds) or missing.
        validation: per task, ``{metric: value}`` from the last validation.
        trained: the checkpoint file's modification date (UTC, ``YYYY-MM-DD``).
        trunk: the trunk as configured.
    """

    path: Path
    version: str
    tasks: list[TaskSpec]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    points: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation: dict[str, dict[str, float | None]] = field(default_factory=dict)
    trained: str | None = None
    trunk: str = ""

    @classmethod
    def read(cls, path: str | Path) -> ModelInfo:
        """Read a ``.ckpt`` (``weights_only=True``).

        Raises:
            FileNotFoundError: no such file.
            BadInput: not a ldoctor checkpoint (no task specs), naming the file.
        """
        from ldoctor.callbacks.operating_points import read_operating_points  # noqa: PLC0415

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for files that are not checkpoints
            raise BadInput(f"{path}: cannot read as a checkpoint ({type(err).__name__}: {err}); expected a .ckpt "
                           "written by train.py fit") from None
        hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
        if not hparams.get("tasks"):
            raise BadInput(f"{path}: no task specs in hyper_parameters; expected a .ckpt written by train.py fit")
        tasks = [TaskSpec(**t) for t in hparams["tasks"]]
        validation: dict[str, dict[str, float | None]] = {}
        for key, value in (checkpoint.get(VALIDATION_KEY) or {}).items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "val" and parts[2] in CARD_METRICS:  # NaN (undefined) -> None
                validation.setdefault(parts[1], {})[parts[2]] = None if math.isnan(float(value)) else float(value)
        state = read_operating_points(checkpoint) or {}
        points = {task: {**entry, "rule": state.get("rule")} for task, entry in state.get("tasks", {}).items()}
        trained = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d")
        trunk = hparams.get("trunk")
        return cls(path, file_version(path), tasks, dict(checkpoint.get(INFERENCE_KEY) or {}), dict(points),
                   validation, trained, trunk if isinstance(trunk, str) else str(trunk))

    def card(self) -> dict[str, Any]:
        """The ``model`` entry of ``report.json``."""
        return {
            "version": self.version, "trunk": self.trunk, "tasks": [t.name for t in self.tasks],
            "trained": self.trained,
            "training_data": {name: s.get("description", "not recorded") for name, s in self.settings.items()},
            "validation": self.validation,
        }
