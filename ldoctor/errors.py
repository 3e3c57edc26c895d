"""Bad input: the one error type for the user's data, and the one collector behind every ``skip_bad`` option.

Every reader reports a problem as a message naming the file (and line or record) and what was expected. With
``skip_bad=False`` (the default everywhere) the first problem raises; with ``skip_bad=True`` problems are counted
by kind, the first few logged, and :meth:`BadInputLog.summary` warns once with the counts.

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

log = logging.getLogger(__name__)

#: Messages logged per kind of problem when skipping; the rest are only counted.
LOGGED_PER_KIND = 5


class BadInput(ValueError):
    """A bad file, row or record in the user's data."""


class BadInputLog:
    """Raise at the first bad input, or (``skip_bad``) count it by kind and go on.

    Args:
        skip_bad: count and skip instead of raising.
        source: what is being read, for the summary warning (e.g. ``"ChestX-ray14 /data/nih"``).

    Attributes:
        counts: problems skipped, by kind.
    """

    def __init__(self, skip_bad: bool = False, source: str = "") -> None:
        self.skip_bad, self.source = skip_bad, source
        self.counts: Counter[str] = Counter()

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
            log.warning("skipped %s: %s", kind, message)
        self.counts[kind] += len(messages)

    def summary(self) -> None:
        """Warn once with the counts of what was skipped (nothing when nothing was)."""
        if self.counts:
            rank_zero_warn(f"{self.source}: skipped bad input (skip_bad=True): {dict(self.counts)}")
