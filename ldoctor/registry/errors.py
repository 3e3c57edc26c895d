"""The registry's errors: one base class, and a lookup that found no such version or alias."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked (no previous version, lock held, damaged log)."""


class UnknownVersion(RegistryError, LookupError):
    """A version id or alias that the registry does not hold; the message names it."""
