"""Durable file operations of the registry: a file replaced atomically, a file copied and synced, a JSON line
appended in one ``write``, JSON lines read with a torn last line set apart, and an exclusive lock.

Written here rather than taken from a library: the recipe is a few standard calls (temporary file in the same
folder, ``fsync``, ``os.replace``, ``fsync`` of the folder; ``O_APPEND`` + one ``write`` + ``fsync``; ``fcntl.flock``),
and what the registry needs around them (naming the file in every error, undoing a short append) is registry-specific.
POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ldoctor.registry.errors import RegistryError

#: Mode of every file inside a version folder: nobody writes to it again.
READ_ONLY = 0o444
#: Prefix of the temporary files :func:`write_json_atomic` leaves when killed (``.<name>.tmp-<pid>``).
TEMPORARY_MARK = ".tmp-"


def fsync_dir(folder: Path) -> None:
    """Persist the entries of ``folder`` (a rename or a new file in it) on POSIX file systems."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def to_json(data: Any, what: str) -> str:
    """``data`` as indented JSON text with sorted keys; plain types only (no NaN: JSON has none).

    Raises:
        ValueError: naming ``what`` and the value that is not plain JSON.
    """
    try:
        return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not plain JSON ({err}); use dicts, lists, strings, finite numbers, "
                         "booleans and None") from None


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    """Write ``data`` as JSON to ``path``: a temporary file in its folder, ``fsync``, ``os.replace``, folder ``fsync``.

    A reader sees the old file or the complete new one, never a part; a writer killed midway leaves a hidden
    ``.<name>.tmp-<pid>`` file that readers never open.
    """
    text = to_json(data, str(path))
    tmp = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def copy_synced(source: Path, target: Path) -> None:
    """Copy the bytes of ``source`` to the new file ``target`` and ``fsync`` it."""
    shutil.copyfile(source, target)
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def append_json_line(path: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` as one JSON line with a single ``write`` on an ``O_APPEND`` file, then ``fsync``.

    A write that fails or comes out short (a full disk) is cut back off, so the file never keeps half a line from
    this process; a crash mid-write can still leave one (see :func:`read_json_lines`).
    """
    line = json.dumps(entry, sort_keys=True, allow_nan=False).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{path}: wrote {written} of {len(line)} bytes of a log line (disk full?)")
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def read_json_lines(path: Path) -> tuple[list[dict[str, Any]], bytes]:
    """The JSON objects of a JSON-lines file, and its torn tail.

    Returns:
        ``(entries, tail)``: one dict per complete line (ending in a newline), and the bytes after the last newline
        (``b""`` normally; a crash in the middle of :func:`append_json_line` leaves a line without its newline).
        A missing file reads as no entries.

    Raises:
        RegistryError: a complete line that is not a JSON object, naming the file and line.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], b""
    *lines, tail = data.split(b"\n")
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RegistryError(f"{path} line {number}: not valid JSON ({err}); the log is written by the registry "
                                "only: restore the file from a backup") from None
        if not isinstance(entry, dict):
            raise RegistryError(f"{path} line {number}: expected a JSON object, found {type(entry).__name__}")
        entries.append(entry)
    return entries, tail


def cut_torn_tail(path: Path) -> int:
    """Remove the bytes after the last newline of ``path`` (a line torn by a crash); returns how many."""
    try:
        handle = open(path, "rb+")
    except FileNotFoundError:
        return 0
    with handle:
        data = handle.read()
        keep = data.rfind(b"\n") + 1
        if keep == len(data):
            return 0
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return len(data) - keep


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold ``fcntl.flock(LOCK_EX)`` on ``path`` (created if absent) for the ``with`` block.

    The kernel releases the lock when its holder dies, so a killed writer never leaves the registry locked. The
    holder's process id is written into the file for the error message of a waiter that gives up.

    Raises:
        RegistryError: still held by another process after ``timeout`` seconds, naming the file and that process.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise RegistryError(f"{path}: another writer (process {holder}) has held the registry lock for "
                                        f"over {timeout:g} s; wait for it to finish, or raise lock_timeout") from None
                time.sleep(0.05)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
