"""Checkpoints written atomically: a kill while saving never leaves a corrupt ``last.ckpt``."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

#: The partial file a save writes first: ``.<target name>.tmp-<pid of the writer>``.
PARTIAL_NAME = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>[0-9]+)$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a hidden temporary file next to its target, ``fsync`` it, then ``os.replace``.

    ``os.replace`` is atomic on POSIX and Windows within one file system: readers see either the old file or
    the complete new one. A process killed mid-save leaves at most a ``.<name>.tmp-<pid>`` file behind, which
    nothing reads (Lightning's ``ckpt_path="last"`` looks for ``last*.ckpt`` only); the first save into a folder
    removes such files whose writer is gone (:func:`remove_stale_partials`), and the LDoctorCLI does so for the
    checkpoint folders when ``fit`` starts. The LDoctorCLI uses this class by default (``trainer.plugins``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._swept: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent not in self._swept:
            remove_stale_partials(path.parent)
            self._swept.add(path.parent)
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


def _writer_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine may still be writing; ``True`` whenever that cannot be told."""
    if pid == os.getpid():
        return True  # this process: a save may be running in another thread (its own failures clean up after it)
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def remove_stale_partials(directory: _PATH) -> list[Path]:
    """Delete the partial files that killed saves of :class:`AtomicCheckpointIO` left in ``directory``.

    Only regular files named exactly ``.<name>.tmp-<pid>`` whose writing process no longer runs on this machine
    are removed; anything else (other names, links, folders, a partial file of a live process) is left alone.
    Returns the removed paths.
    """
    directory = Path(directory)
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:  # absent or unreadable: nothing to clean
        return removed
    for entry in entries:
        match = PARTIAL_NAME.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_file() or _writer_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed.append(entry)
            log.info("removed %s, the partial file of an interrupted checkpoint save", entry)
    return removed


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
            "the file); an ldoctor checkpoint needs nothing more. Leave weights_only unset."
        )
    return True
