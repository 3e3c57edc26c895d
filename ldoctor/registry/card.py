"""The model card of a registered version: what the caller knows (parent, data, config, gate report) and what the
checkpoint says (tasks, trunk, calibration, validation metrics), as plain JSON.

Imports torch and Lightning (seconds): :class:`~ldoctor.registry.Registry` imports this file only to register.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import ldoctor
from ldoctor.errors import BadInput
from ldoctor.registry.files import to_json
from ldoctor.report.model_info import VALIDATION_KEY, file_version

__all__ = ["CARD_SCHEMA", "GIVEN_FIELDS", "check_given", "code_version", "file_version", "model_card"]

CARD_SCHEMA = "ldoctor.registry.card/1"
#: The card fields a caller of ``register`` may give; the registry fills in the rest.
GIVEN_FIELDS = ("parent", "data_manifests", "config", "gate_report", "code_version")


def check_given(card: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's part of a card, checked: known fields, right types, plain JSON.

    Raises:
        ValueError: an unknown field (a typo), or a value of the wrong type, naming it.
    """
    unknown = sorted(set(card) - set(GIVEN_FIELDS))
    if unknown:
        raise ValueError(f"card fields {unknown} cannot be given; a caller gives {list(GIVEN_FIELDS)} and the "
                         "registry fills in version, created, tasks, trunk, calibration and validation")
    for name in ("parent", "gate_report", "code_version"):
        if card.get(name) is not None and not isinstance(card[name], str):
            raise ValueError(f"card[{name!r}] must be a string or None, got {type(card[name]).__name__}")
    manifests = card.get("data_manifests") or {}
    if not isinstance(manifests, Mapping) or not all(isinstance(v, str) for v in manifests.values()):
        raise ValueError("card['data_manifests'] must map task names to manifest_hash() strings, got "
                         f"{manifests!r}")
    if card.get("config") is not None and not isinstance(card["config"], Mapping):
        raise ValueError(f"card['config'] must be a dict (the training config), got {type(card['config']).__name__}")
    to_json(dict(card), "card")
    return dict(card)


def code_version() -> str:
    """The git commit of the ldoctor source tree (``+dirty`` when tracked files differ from it), else
    ``"ldoctor <package version>"`` (an installed package, no git, or a source tree git does not track)."""
    package = Path(ldoctor.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # a package inside an ignored folder (a venv) is not HEAD
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return f"ldoctor {ldoctor.__version__}"
    return commit + ("+dirty" if dirty else "")


def model_card(checkpoint: Path, version_id: str, given: Mapping[str, Any], named_as: Path) -> dict[str, Any]:
    """The full card of the checkpoint ``checkpoint`` (read with ``weights_only=True``).

    Args:
        checkpoint: the file to read (the registry's copy).
        version_id: its :func:`file_version`.
        given: the caller's fields, checked by :func:`check_given`.
        named_as: the path the caller gave, for error messages.

    Returns:
        ``{"schema", "version", "parent", "created" (UTC ISO 8601), "tasks": [names], "trunk", "data_manifests":
        {task: hash or None}, "config", "code_version", "calibration" (the OperatingPoints state or None),
        "validation": {"val/...": float or None (NaN: undefined)}, "gate_report"}``.

    Raises:
        BadInput: not a checkpoint, or one without task specs (not from ``train.py fit``), naming ``named_as``.
        ValueError: ``data_manifests`` naming a task the checkpoint lacks.
    """
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for files that are not checkpoints
        raise BadInput(f"{named_as}: cannot read as a checkpoint ({type(err).__name__}: {err}); expected a .ckpt "
                       "written by train.py fit") from None
    hparams = saved.get("hyper_parameters") if isinstance(saved, dict) else None
    if not isinstance(hparams, dict) or not hparams.get("tasks"):
        raise BadInput(f"{named_as}: no task specs in hyper_parameters; expected a .ckpt written by train.py fit")
    if not all(isinstance(spec, dict) and "name" in spec for spec in hparams["tasks"]):
        raise BadInput(f"{named_as}: hyper_parameters['tasks'] are not task specs (dicts with a 'name'); expected a "
                       ".ckpt written by train.py fit")
    tasks = [str(spec["name"]) for spec in hparams["tasks"]]
    manifests = dict(given.get("data_manifests") or {})
    extra = sorted(set(manifests) - set(tasks))
    if extra:
        raise ValueError(f"card['data_manifests'] names {extra}, not tasks of {named_as} (its tasks: {tasks})")
    trunk = hparams.get("trunk")
    return {
        "schema": CARD_SCHEMA,
        "version": version_id,
        "parent": given.get("parent"),
        "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "tasks": tasks,
        "trunk": trunk if isinstance(trunk, str) or trunk is None else str(trunk),
        "data_manifests": {task: manifests.get(task) for task in tasks},
        "config": given.get("config"),
        "code_version": given.get("code_version") or code_version(),
        "calibration": _plain(_calibration(saved)),
        "validation": {str(k): _finite(v) for k, v in (saved.get(VALIDATION_KEY) or {}).items()},
        "gate_report": given.get("gate_report"),
    }


def _calibration(saved: dict[str, Any]) -> dict[str, Any] | None:
    """The OperatingPoints state of a loaded checkpoint, or None; Lightning's callback module loads only if needed."""
    if not saved.get("callbacks"):
        return None
    from ldoctor.callbacks.operating_points import read_operating_points  # noqa: PLC0415

    return read_operating_points(saved)


def _plain(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN), containers copied."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finite(value: Any) -> float | None:
    """A metric as a float, ``None`` for NaN (undefined: JSON has no NaN)."""
    number = float(value)
    return number if math.isfinite(number) else None
