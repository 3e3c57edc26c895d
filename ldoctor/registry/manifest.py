"""The hash of a task's training data that a model card records (``data_manifests``)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def manifest_hash(items: Iterable[Mapping[str, Any] | str | os.PathLike[str]], key: str = "patient_id") -> str:
    """``sha256:<first 16 hex>`` of a task's training data, the same on every machine for the same data.

    Each item gives one text entry:

    - a record (a mapping, as the dataset families' records are) gives ``patient:<record[key]>``, the patient id as
      text: the hash changes when a patient (or one more image of a patient) joins or leaves the data, not when a
      file moves;
    - a file path gives ``file:sha256:<16 hex>``, the hash of the file's bytes
      (:func:`ldoctor.report.model_info.file_version`): not its name nor its folder.

    The entries are sorted (the order of the data does not matter), duplicates kept (a patient with three images
    counts three times), joined with newlines, encoded as UTF-8 and hashed with SHA-256. Labels are not hashed.
    The raw patient id is hashed rather than :func:`ldoctor.privacy.pseudonym`, whose salt differs per machine and
    would make the same data hash differently elsewhere; only the digest is stored, never the entries.

    Args:
        items: records and/or file paths of one task's training data.
        key: the record field holding the patient id (``"patient_id"``, ``"subject_id"`` for MIMIC).

    Returns:
        ``"sha256:"`` + 16 hex digits.

    Raises:
        ValueError: no items, a record without ``key`` or an id with a newline, naming its position.
        FileNotFoundError: a path that is not a file.

    Example:
        >>> manifest_hash([{"patient_id": 2}, {"patient_id": 1}]) == manifest_hash([{"patient_id": 1}, {"patient_id": 2}])
        True
    """
    entries = sorted(_entry(item, key, i) for i, item in enumerate(items))
    if not entries:
        raise ValueError("manifest_hash: no records or files given; a task without training data has no manifest")
    digest = hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()
    return f"sha256:{digest[:16]}"


def _entry(item: Mapping[str, Any] | str | os.PathLike[str], key: str, position: int) -> str:
    """The text entry of one record or file (see :func:`manifest_hash`)."""
    if isinstance(item, Mapping):
        if key not in item:
            raise ValueError(f"manifest_hash: record {position} has no {key!r} (its keys: {sorted(item)}); pass "
                             "key= the field holding the patient id")
        patient = str(item[key])
        if "\n" in patient:
            raise ValueError(f"manifest_hash: record {position}: the {key!r} value contains a newline")
        return f"patient:{patient}"
    # torch and Lightning load in seconds: imported only when a file is hashed
    from ldoctor.report.model_info import file_version  # noqa: PLC0415

    path = Path(item)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: item {position} of the manifest is not a file")
    return f"file:{file_version(path)}"
