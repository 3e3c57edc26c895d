"""Injected factories (classes, ``functools.partial`` of classes) as LightningCLI config dicts.

A :class:`~ldoctor.module.MultiTaskModule` is built from factories: heads, losses, metrics, a weighting class. The
CLI stores them in the checkpoint as the config it parsed (``class_path`` + ``init_args``); a module built in
Python stores them the same way through :func:`factory_config`, so ``MultiTaskModule.load_from_checkpoint(path)``
rebuilds either with the heads and options it was trained with. A factory that cannot be written as config (a
lambda, a class defined inside a function) is left out and must be passed to ``load_from_checkpoint`` again.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

#: What a config value may hold: JSON-like data.
_PLAIN = (str, int, float, bool, type(None))


def is_plain(value: Any) -> bool:
    """True for JSON-like data (str, numbers, bools, None, and lists / dicts of them)."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def _importable_path(cls: type) -> str | None:
    """``module.QualName`` when importing it gives ``cls`` back, else ``None``."""
    if "<locals>" in cls.__qualname__:
        return None
    try:
        found = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{cls.__module__}.{cls.__qualname__}" if found is cls else None


def factory_config(value: Any) -> Any | None:
    """The config form of one factory or a dict of them; ``None`` when something cannot be written as config.

    Example:
        >>> from collections import OrderedDict
        >>> factory_config(functools.partial(OrderedDict, a=1))
        {'class_path': 'collections.OrderedDict', 'init_args': {'a': 1}}
    """
    if is_plain(value):
        return value
    if isinstance(value, dict):
        configs = {k: factory_config(v) for k, v in value.items()}
        return None if any(c is None for c in configs.values()) else configs
    init_args: dict[str, Any] = {}
    if isinstance(value, functools.partial):
        if value.args or not is_plain(value.keywords):
            return None
        value, init_args = value.func, dict(value.keywords)
    path = _importable_path(value) if isinstance(value, type) else None
    if path is None:
        return None
    return {"class_path": path, "init_args": init_args} if init_args else {"class_path": path}
