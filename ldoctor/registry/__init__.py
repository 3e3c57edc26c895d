"""A versioned model registry on the local file system (layout: :mod:`ldoctor.registry.registry`).

- :class:`Registry`: ``register`` a checkpoint as an immutable version (id ``sha256:<16 hex>`` of its bytes, with a
  model card), ``set_alias`` / ``rollback`` aliases such as ``champion`` (every move logged), ``get`` a version;
- :func:`manifest_hash`: the hash of a task's training data that a card records;
- :mod:`ldoctor.registry.mirror`: copy versions and alias moves to MLflow's model registry;
- ``python -m ldoctor.registry --root DIR {list,show,register,promote,rollback,log}``: the same from a shell.

Importing this package loads neither torch nor Lightning: registering a checkpoint does, when it reads it.
"""

from __future__ import annotations

from ldoctor.registry.errors import RegistryError, UnknownVersion
from ldoctor.registry.manifest import manifest_hash
from ldoctor.registry.mirror import Mirror
from ldoctor.registry.registry import CHAMPION, Registry, Version

__all__ = ["CHAMPION", "Mirror", "Registry", "RegistryError", "UnknownVersion", "Version", "manifest_hash"]
