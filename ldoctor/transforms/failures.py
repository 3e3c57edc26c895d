"""A failure while preprocessing one record, as one error that names the record's file and what was expected.

MONAI's ``Compose`` / ``apply_transform`` wrap whatever a reader raises in ``RuntimeError("applying transform <...
object at 0x...>")``, so the last line of a traceback named no file. :func:`named_error` undoes that: when the root
cause (followed through ``__cause__``) is a :class:`~ldoctor.errors.BadInput` or a ``FileNotFoundError`` (what
ldoctor's readers raise, naming the file), that error is raised again without MONAI's wrappers; any other root cause
(a library's own exception for a corrupt file) becomes a ``BadInput`` naming the file, the root cause and what the
file should have been.

When the failure happens decides what ``skip_bad`` can do. While a cache is filled at setup (``cache="memory"``) a
bad record is reported to the DataModule's :class:`~ldoctor.errors.BadInputLog` and, with ``skip_bad``, left out and
counted. Mid-epoch (``cache="none"`` or ``"disk"``, or images linked to admissions) a batch cannot leave a sample out,
so the error is raised even with ``skip_bad``, and says so (:data:`LAZY_HINT`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ldoctor.errors import BadInput

#: Appended to errors raised while loading a batch from a lazily preprocessed dataset.
LAZY_HINT = (
    "found while loading a batch, where skip_bad cannot leave a sample out: fix or remove the file, or use "
    "cache='memory', which reads every file at setup and skips bad ones with skip_bad=True"
)


@dataclass(frozen=True)
class RecordFile:
    """Which record key holds the file a preprocessing reads, and what that file should be (for messages).

    Args:
        key: the record key holding the path (``"image"``, ``"volume"``).
        expected: what the file should be, e.g. ``"a readable radiograph (PNG, or single-frame grey DICOM)"``.
        kind: the :class:`~ldoctor.errors.BadInputLog` kind under which skipped records are counted.
    """

    key: str = "image"
    expected: str = "a file the preprocessing can read"
    kind: str = "unreadable files"

    def source(self, record: Mapping) -> str:
        """The record's file, or ``record <id>`` when the record holds its data in memory."""
        value = record.get(self.key)
        return str(value) if isinstance(value, str | os.PathLike) else f"record {record.get('id', '?')}"


#: The default: the ``"image"`` key, no more said about the file than that it must be readable.
ANY_FILE = RecordFile()


def input_error(error: BaseException | None) -> BadInput | FileNotFoundError | None:
    """The first :class:`~ldoctor.errors.BadInput` or ``FileNotFoundError`` along ``error``'s ``__cause__`` chain."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, BadInput | FileNotFoundError):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


def root_cause(error: BaseException) -> BaseException:
    """The last exception of ``error``'s ``__cause__`` chain (under MONAI's ``RuntimeError`` wrappers)."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


def named_error(error: BaseException, source: str, expected: str, hint: str = "") -> BadInput | FileNotFoundError:
    """The error to raise for a record whose preprocessing raised ``error``; its message starts with ``source``.

    Args:
        error: what the preprocessing raised (usually MONAI's ``RuntimeError`` wrapper).
        source: the record's file (:meth:`RecordFile.source`).
        expected: what the file should be.
        hint: appended after ``"; "`` (e.g. :data:`LAZY_HINT`).

    Returns:
        the reader's own ``BadInput`` / ``FileNotFoundError`` when there is one that names ``source`` and no hint is
        added; else a new error of that class (or a ``BadInput``) whose ``__cause__`` is the root cause's, so that the
        traceback shows the reader's failure and then one line naming the file, without MONAI's wrappers.
    """
    found = input_error(error)
    suffix = f"; {hint}" if hint else ""
    if found is not None:
        message = str(found) if str(found).startswith(source) else f"{source}: {found}"
        if message == str(found) and not suffix:
            found.__suppress_context__ = True  # MONAI's wrappers hold it as their cause: do not show them again
            return found
        new: BadInput | FileNotFoundError = (BadInput if isinstance(found, BadInput) else FileNotFoundError)(
            message + suffix)
        cause = found.__cause__
    else:
        cause = root_cause(error)
        new = BadInput(f"{source}: cannot be preprocessed ({type(cause).__name__}: {cause}); expected {expected}{suffix}")
    new.__cause__ = cause
    new.__suppress_context__ = True
    return new
