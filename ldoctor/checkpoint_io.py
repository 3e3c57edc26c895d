"""Checkpoints written atomically: a kill while saving never leaves a corrupt ``last.ckpt``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a hidden temporary file next to its target, ``fsync`` it, then ``os.replace``.

    ``os.replace`` is atomic on POSIX and Windows within one file system: readers see either the old file or
    the complete new one. A process killed mid-save leaves at most a ``.<name>.tmp-<pid>`` file behind.
    The LDoctorCLI uses it by default (``trainer.plugins``).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checked_weights_only(weights_only: bool | None, path: object) -> bool:
    """``True``, the only way ldoctor reads a checkpoint; an explicit ``False`` is refused, naming the path."""
    if weights_only is False:
        raise ValueError(
            f"{path}: ldoctor reads checkpoints with weights_only=True only (a full unpickle can run code stored in "
            "the file); an ldoctor checkpoint needs nothing more. Drop weights_only=false."
        )
    return True
