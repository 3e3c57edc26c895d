"""Checkpoints written atomically: a kill while saving never leaves a corrupt ``last.ckpt``, and a full disk
leaves the previous one in place. Torch files are read as tensors only (:func:`load_tensors`)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ldoctor.errors import BadInput

log = logging.getLogger(__name__)

#: The partial file a save writes first: ``.<target name>.tmp-<pid of the writer>``.
PARTIAL_NAME = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>[0-9]+)$")
#: ``errno`` values of a write that ran out of room: no space, quota exceeded, file too large.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


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
        except BaseException as err:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if isinstance(err, OSError) and err.errno in NO_ROOM:
                raise no_room_error(err, path) from err
            raise
        _fsync_dir(path.parent)


def no_room_error(err: OSError, path: Path) -> OSError:
    """An ``OSError`` (same ``errno``) for a checkpoint save that ran out of room: names the target, the bytes free
    on its file system and whether a previous checkpoint is kept (the partial file is already gone)."""
    try:
        free = f"{shutil.disk_usage(path.parent).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    kept = (f"the previous {path.name} is kept, untouched" if path.exists() else
            f"no earlier {path.name} exists")
    return OSError(err.errno, f"{path}: cannot write the checkpoint: {os.strerror(err.errno)} ({free} on its file "
                              f"system); the partial file was removed and {kept}; free space (or raise the quota) or "
                              "point the checkpoint dirpath at another disk, then resume with --ckpt_path")


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


#: The first bytes of what ``torch.save`` writes: a zip archive (PyTorch >= 1.6) or a pickle (older files).
_ZIP_MAGIC, _PICKLE_PROTOCOL = b"PK\x03\x04", 0x80


def load_tensors(path: str | Path, expected: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain values, never code.

    A file that cannot be read that way is a :class:`~ldoctor.errors.BadInput` naming it and ``expected`` (what the
    file should be): empty, not written by ``torch.save``, truncated or damaged, or holding more than tensors and
    plain values (refused by ``weights_only=True``; nothing in it ran).

    Raises:
        FileNotFoundError: no such file. BadInput: as above.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected {expected}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise BadInput(f"{path}: empty (0 bytes); expected {expected}")
    if head != _ZIP_MAGIC and head[0] != _PICKLE_PROTOCOL:
        raise BadInput(f"{path}: not written by torch.save (it starts with {head!r}, neither a zip archive nor a "
                       f"pickle); expected {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise BadInput(f"{path}: refused by torch.load(weights_only=True) (Weights only load failed: "
                       f"{_refusal_reason(err)}; nothing in it ran); expected {expected}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        if isinstance(err, (PermissionError, IsADirectoryError)):
            raise
        reason = str(err).split(". ")[0].strip() or "the file ends early"
        raise BadInput(f"{path}: truncated or damaged ({type(err).__name__}: {reason}); expected {expected}; copy or "
                       "save it again") from None


def _refusal_reason(err: pickle.UnpicklingError) -> str:
    """The reason in torch's weights-only refusal, without its advice (which names the unsafe setting)."""
    lines = [line.strip() for line in str(err).splitlines()]
    reasons = [line.partition("WeightsUnpickler error:")[2].strip() if "WeightsUnpickler error:" in line else line
               for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))]
    reasons = [r for r in reasons if r]
    return reasons[0].split(". ")[0].rstrip(".") if reasons else "not a pickle of tensors and plain values"
