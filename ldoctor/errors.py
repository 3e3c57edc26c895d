"""Bad input: the one error type for the user's data, and the one collector behind every ``skip_bad`` option.

Every reader reports a problem as a message naming the file (and line or record) and what was expected. With
``skip_bad=False`` (the default everywhere) the first problem raises; with ``skip_bad=True`` problems are counted
by kind, the first few logged, and :meth:`BadInputLog.summary` warns once with the counts and the skipped files.

What is logged is :func:`ldoctor.privacy.redact`-ed: file paths, DICOM UIDs, patient and admission ids and dates
become salted pseudonyms (``file-3fa2c9e1d0.dcm``), since logs reach W&B and other services. The full messages
stay in memory, in :attr:`BadInputLog.skipped`, for the user's own code; ``python -m ldoctor.privacy which
PSEUDONYM DATA_DIR`` finds the file a logged pseudonym names. Errors (``skip_bad=False``) name the file in full:
the run stops there and the user must find the file to fix it.

Example:
    >>> bad = BadInputLog(skip_bad=True)
    >>> bad.report("missing images", "x.png: listed in table.csv line 3, not found")
    >>> dict(bad.counts)
    {'missing images': 1}
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from lightning.pytorch.utilities import rank_zero_warn

from ldoctor.privacy import redact

log = logging.getLogger(__name__)

#: Messages logged per kind of problem when skipping; the rest are only counted.
LOGGED_PER_KIND = 5
#: Skipped problems named (by pseudonym) in the summary warning.
NAMED_IN_SUMMARY = 10


class BadInput(ValueError):
    """A bad file, row or record in the user's data."""


class BadInputLog:
    """Raise at the first bad input, or (``skip_bad``) count it by kind and go on.

    Args:
        skip_bad: count and skip instead of raising.
        source: what is being read, for the summary warning (e.g. ``"ChestX-ray14 /data/nih"``).

    Attributes:
        counts: problems skipped, by kind.
        skipped: every skipped problem as ``(kind, message)``, the message in full (not logged: it may identify a
            patient).
    """

    def __init__(self, skip_bad: bool = False, source: str = "") -> None:
        self.skip_bad, self.source = skip_bad, source
        self.counts: Counter[str] = Counter()
        self.skipped: list[tuple[str, str]] = []

    def report(self, kind: str, message: str, error: type[Exception] = BadInput) -> None:
        """One problem: raises ``error(message)`` unless ``skip_bad``, else counts it under ``kind``."""
        self.report_all(kind, [message], error)

    def report_all(self, kind: str, messages: Sequence[str], error: type[Exception] = BadInput) -> None:
        """Several problems of one kind: raises on the first (saying how many more there are) unless ``skip_bad``."""
        if not messages:
            return
        if not self.skip_bad:
            more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
            raise error(f"{messages[0]}{more}; set skip_bad=True to skip and count such input")
        for message in messages[: max(0, LOGGED_PER_KIND - self.counts[kind])]:
            log.warning("skipped %s: %s", kind, redact(message))
        self.counts[kind] += len(messages)
        self.skipped.extend((kind, message) for message in messages)

    def summary(self) -> None:
        """Warn once with the counts and the first :data:`NAMED_IN_SUMMARY` problems, pseudonymised (nothing when
        nothing was skipped)."""
        if not self.counts:
            return
        named = "; ".join(f"{kind}: {redact(message)}" for kind, message in self.skipped[:NAMED_IN_SUMMARY])
        more = f" (and {len(self.skipped) - NAMED_IN_SUMMARY} more)" if len(self.skipped) > NAMED_IN_SUMMARY else ""
        rank_zero_warn(
            f"{redact(self.source)}: skipped bad input (skip_bad=True): {dict(self.counts)}; {named}{more}. Files "
            "are named by pseudonym (`python -m ldoctor.privacy which PSEUDONYM DATA_DIR` finds one); the full "
            "messages are in the DataModule's BadInputLog.skipped"
        )
