"""A versioned model registry on the local file system: immutable versions named by their content hash, aliases
(``champion`` and any named ones) that move only through it, every move logged, writes atomic under one lock.

Layout of a registry folder ``ROOT``::

    ROOT/
      versions/
        sha256:0123456789abcdef/    one folder per version, named by file_version() of its checkpoint
          model.ckpt                the checkpoint's bytes, read-only (0444)
          card.json                 the model card, read-only (0444): see ldoctor.registry.card.model_card
        .incoming-<pid>-<hex>/      a version being written; renamed to its id when complete
      aliases.json                  {"champion": "sha256:...", ...}, replaced atomically
      log.jsonl                     one JSON object per alias move, appended, never rewritten
      .lock                         fcntl.flock-ed around every change; holds the writer's process id
      .aliases.json.tmp-<pid>       aliases.json being written

A log entry: ``{"time" (UTC ISO 8601), "who", "alias", "from" (version id, null for a new alias), "to", "why",
"gate_report" (id or null), "action": "set" | "rollback"}``.

How a crash at any moment leaves the registry consistent:

- a version folder is written under a hidden temporary name, synced, and renamed into place, so a visible
  version folder is always complete; the next writer removes a killed writer's ``.incoming-*`` folder;
- a move is appended to ``log.jsonl`` (one ``write`` of the full line, ``fsync``) *before* ``aliases.json`` is
  replaced: the log is the record, ``aliases.json`` its current state. A line torn by a crash (no newline) is
  ignored with a warning and cut off by the next writer; an ``aliases.json`` that disagrees with the log (a
  writer stopped between the two steps, or a hand edit) is rewritten from the log with a warning, when the
  registry is opened and before every change;
- one writer at a time: every change holds ``fcntl.flock`` on ``.lock``, which the kernel releases when its
  holder dies. Readers take no lock: every file they read is replaced atomically or only appended to.

POSIX only (``fcntl``). One :class:`Registry` object per thread.

Example:
    >>> registry = Registry(tmp_path / "registry")                                    # doctest: +SKIP
    >>> version = registry.register("outputs/last.ckpt", {"data_manifests": {"disease": manifest_hash(records)}})
    >>> registry.set_alias("champion", version, who="gate", why="passed", gate_report="gate-0007")
    >>> registry.get("champion").path                                   # .../versions/sha256:.../model.ckpt
    >>> registry.rollback(who="alice", why="calibration drift on site B")
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldoctor.registry.errors import RegistryError, UnknownVersion
from ldoctor.registry.files import (
    READ_ONLY,
    TEMPORARY_MARK,
    append_json_line,
    copy_synced,
    cut_torn_tail,
    exclusive_lock,
    fsync_dir,
    read_json_lines,
    write_json_atomic,
)

if TYPE_CHECKING:
    from ldoctor.registry.mirror import Mirror

logger = logging.getLogger(__name__)

CHECKPOINT_NAME, CARD_NAME = "model.ckpt", "card.json"
CHAMPION = "champion"
VERSION_ID = re.compile(r"^sha256:[0-9a-f]{16}$")
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
INCOMING_PREFIX = ".incoming-"
LOG_FIELDS = ("time", "who", "alias", "from", "to", "why", "gate_report", "action")


@dataclass(frozen=True)
class Version:
    """One registered version.

    Attributes:
        id: ``sha256:<16 hex>`` of the checkpoint's bytes.
        path: its ``model.ckpt`` (read-only) inside the registry.
        card: its model card (``card.json``).
    """

    id: str
    path: Path
    card: dict[str, Any]


def now() -> str:
    """The current UTC time, ISO 8601 to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def alias_stacks(entries: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per alias, the versions a rollback walks back through, oldest first, the current one last.

    A ``"set"`` move pushes its target; a ``"rollback"`` pops the current version (so rolling back twice goes back
    two promotions, not back and forth).
    """
    stacks: dict[str, list[str]] = {}
    for entry in entries:
        stack = stacks.setdefault(entry["alias"], [])
        if entry["action"] == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != entry["to"]:
            stack.append(entry["to"])
    return stacks


class Registry:
    """The model registry in the folder ``root`` (layout in the module docstring).

    Opening it repairs what a killed writer left (see the module docstring), with a warning.

    Args:
        root: the registry folder.
        create: create an empty registry when ``root`` holds none; ``False``: raise instead.
        mirrors: adapters told of every new version and alias move after it is written here
            (:class:`~ldoctor.registry.mirror.Mirror`, e.g. :class:`~ldoctor.registry.mirror.MLflowMirror`).
        lock_timeout: seconds to wait for another writer before giving up.

    Raises:
        FileNotFoundError: ``create=False`` and no registry in ``root``.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True, mirrors: Sequence[Mirror] = (),
                 lock_timeout: float = 120.0) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.aliases_path = self.root / "aliases.json"
        self.log_path = self.root / "log.jsonl"
        self.lock_path = self.root / ".lock"
        self.mirrors = list(mirrors)
        self.lock_timeout = lock_timeout
        self._lock_depth = 0
        if not self.versions_dir.is_dir():
            if not create:
                raise FileNotFoundError(f"{self.root}: no model registry here (no versions/ folder); create one by "
                                        f"registering a checkpoint: python -m ldoctor.registry --root {self.root} "
                                        "register CKPT")
            self.versions_dir.mkdir(parents=True, exist_ok=True)
        entries, tail = read_json_lines(self.log_path)
        if tail or self._alias_problem(self._checked(entries)) is not None:
            with self.lock():  # repairs, with warnings
                pass

    # ------------------------------------------------------------------------------------------- reading
    def get(self, alias_or_id: str) -> Version:
        """The version an alias points to, or of a version id.

        Raises:
            UnknownVersion: no such alias or version, naming it.
        """
        if VERSION_ID.match(alias_or_id):
            version_id = alias_or_id
        else:
            aliases = self.aliases()
            if alias_or_id not in aliases:
                raise UnknownVersion(f"{alias_or_id!r}: neither a version id (sha256:<16 hex>) nor an alias of "
                                     f"{self.root} (aliases: {sorted(aliases) or 'none'})")
            version_id = aliases[alias_or_id]
        folder = self.versions_dir / version_id
        try:
            card = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UnknownVersion(f"{version_id}: no such version in {self.root}; python -m ldoctor.registry --root "
                                 f"{self.root} list shows them") from None
        return Version(version_id, folder / CHECKPOINT_NAME, card)

    def versions(self) -> list[Version]:
        """Every registered version, oldest first."""
        found = [self.get(p.name) for p in self.versions_dir.iterdir() if VERSION_ID.match(p.name)]
        return sorted(found, key=lambda v: (v.card.get("created", ""), v.id))

    def aliases(self) -> dict[str, str]:
        """``{alias: version id}``."""
        try:
            text = self.aliases_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            aliases = json.loads(text)
        except json.JSONDecodeError as err:
            raise RegistryError(f"{self.aliases_path}: not valid JSON ({err})") from None
        if not isinstance(aliases, dict) or not all(isinstance(v, str) and VERSION_ID.match(v)
                                                    for v in aliases.values()):
            raise RegistryError(f"{self.aliases_path}: expected {{alias: version id}}, found {aliases!r}")
        return aliases

    def moves(self) -> list[dict[str, Any]]:
        """Every alias move, oldest first (the entries of ``log.jsonl``; a torn last line ignored with a warning)."""
        entries, tail = read_json_lines(self.log_path)
        if tail:
            warnings.warn(f"{self.log_path}: its last line is incomplete ({len(tail)} bytes without a newline: a "
                          "writer stopped mid-append); ignored", stacklevel=2)
        return self._checked(entries)

    def _checked(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``entries`` of the log, after checking that each has every field."""
        for number, entry in enumerate(entries, 1):
            missing = [name for name in LOG_FIELDS if name not in entry]
            if missing:
                raise RegistryError(f"{self.log_path} line {number}: no {missing}; an entry has {list(LOG_FIELDS)}")
            if not VERSION_ID.match(str(entry["to"])) or entry["from"] is not None and not VERSION_ID.match(
                    str(entry["from"])):
                raise RegistryError(f"{self.log_path} line {number}: 'from' and 'to' must be version ids "
                                    f"(sha256:<16 hex>), found {entry['from']!r} and {entry['to']!r}")
        return entries

    def history(self, alias: str) -> list[dict[str, Any]]:
        """The moves of ``alias``, oldest first.

        Raises:
            UnknownVersion: an alias that was never set, naming it.
        """
        found = [entry for entry in self.moves() if entry["alias"] == alias]
        if not found:
            raise UnknownVersion(f"{alias!r}: no such alias in {self.root} (aliases: {sorted(self.aliases()) or 'none'})")
        return found

    def verify(self, alias_or_id: str) -> Version:
        """The version, after checking that its checkpoint still hashes to its id and its card names it.

        Raises:
            RegistryError: the bytes or the card changed after registration, naming the file.
        """
        from ldoctor.report.model_info import file_version  # noqa: PLC0415 (torch, Lightning: seconds)

        version = self.get(alias_or_id)
        found = file_version(version.path)
        if found != version.id:
            raise RegistryError(f"{version.path}: its bytes hash to {found}, not to its version id {version.id}: the "
                                "file was changed after registration; restore it from a copy of that version")
        if version.card.get("version") != version.id:
            raise RegistryError(f"{version.path.parent / CARD_NAME}: names version {version.card.get('version')!r}, "
                                f"its folder is {version.id}")
        return version

    # ------------------------------------------------------------------------------------------- changing
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the registry's write lock (re-entrant within this object); on first entry, clean up after killed
        writers: remove their temporary files, cut a torn log line, bring ``aliases.json`` in line with the log.

        Use it around several changes that must not interleave with another writer's (register, then promote).
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with exclusive_lock(self.lock_path, self.lock_timeout):
            self._lock_depth = 1
            try:
                self._recover()
                yield
            finally:
                self._lock_depth = 0

    def register(self, checkpoint_path: str | os.PathLike[str], card: Mapping[str, Any] | None = None) -> str:
        """Copy a checkpoint into the registry as an immutable version with its model card.

        Registering the same bytes again returns the same id and changes nothing (a warning says when the card
        given differs from the stored one, which is kept).

        Args:
            checkpoint_path: a ``.ckpt`` written by ``train.py fit`` (read with ``weights_only=True``).
            card: the caller's fields (:data:`~ldoctor.registry.card.GIVEN_FIELDS`): ``parent`` (a version id),
                ``data_manifests`` (``{task: manifest_hash(...)}``), ``config`` (the training config, a dict),
                ``gate_report`` (an id), ``code_version`` (default: the git commit of the ldoctor source).

        Returns:
            The version id, ``sha256:<16 hex>`` of the checkpoint's bytes.

        Raises:
            FileNotFoundError: no such checkpoint.
            UnknownVersion: a ``parent`` the registry does not hold.
            ValueError: an unknown card field or a badly typed one; ``BadInput`` (a ``ValueError``) for a file that
                is not an ldoctor checkpoint; each naming it.
        """
        from ldoctor.registry.card import check_given, file_version  # noqa: PLC0415 (torch, Lightning: seconds)

        source = Path(checkpoint_path)
        if not source.is_file():
            raise FileNotFoundError(f"{source}: checkpoint not found")
        given = check_given(card or {})
        parent = given.get("parent")
        if parent is not None:
            if not VERSION_ID.match(parent):
                raise ValueError(f"card['parent'] must be a version id (sha256:<16 hex>), got {parent!r}; for an "
                                 f"alias pass registry.get({parent!r}).id")
            self.get(parent)
        version_id = file_version(source)
        with self.lock():
            if (self.versions_dir / version_id).is_dir():
                self._note_kept_card(version_id, given, source)
                return version_id
            self._write_version(source, version_id, given)
        self._mirror("on_register", self.get(version_id))
        return version_id

    def set_alias(self, name: str, version_id: str, who: str, why: str,
                  gate_report: str | None = None) -> dict[str, Any] | None:
        """Point alias ``name`` at a version, logging the move.

        Args:
            name: the alias (letters, digits, ``_.-``; starting with a letter), e.g. ``"champion"``.
            version_id: the version's id (an alias is resolved to its version).
            who: who moves it (a person, or the gate).
            why: the reason, in words.
            gate_report: the id of the gate report that decided it, if any.

        Returns:
            The log entry, or ``None`` when the alias already pointed there (nothing moved, nothing logged).

        Raises:
            UnknownVersion: an unknown version, naming it.
            ValueError: a bad alias name, or an empty ``who`` / ``why``.
        """
        _check_alias(name)
        _check_text(who=who, why=why)
        if gate_report is not None and not isinstance(gate_report, str):
            raise ValueError(f"gate_report must be a report id (a string) or None, got {type(gate_report).__name__}")
        with self.lock():
            target = self.get(version_id).id
            current = self.aliases().get(name)
            if current == target:
                logger.info("%s already points to %s: nothing moved", name, target)
                return None
            entry = self._move(name, current, target, who, why, gate_report, "set")
        self._mirror("on_alias", name, self.get(target))
        return entry

    def rollback(self, alias: str = CHAMPION, *, who: str, why: str) -> str:
        """Move ``alias`` back to the version it pointed to before its last promotion (from the log).

        Rolling back twice goes back two promotions. The move is logged with ``"action": "rollback"``.

        Returns:
            The version id the alias points to now.

        Raises:
            UnknownVersion: an alias that was never set.
            RegistryError: the alias has no previous version, naming it and its only version.
        """
        _check_text(who=who, why=why)
        with self.lock():
            stack = alias_stacks(self.history(alias)).get(alias, [])
            if len(stack) < 2:
                raise RegistryError(f"{alias!r} has no previous version to roll back to: the log of {self.root} "
                                    f"has it at {stack[-1]} with nothing before; set it with set_alias instead")
            current, target = stack[-1], stack[-2]
            self._move(alias, current, target, who, why, None, "rollback")
        self._mirror("on_alias", alias, self.get(target))
        return target

    # ------------------------------------------------------------------------------------------- internals
    def _write_version(self, source: Path, version_id: str, given: dict[str, Any]) -> None:
        """Write the version folder under a hidden name, sync it, rename it into place (lock held)."""
        from ldoctor.registry.card import file_version, model_card  # noqa: PLC0415

        incoming = self.versions_dir / f"{INCOMING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        incoming.mkdir()
        try:
            checkpoint = incoming / CHECKPOINT_NAME
            copy_synced(source, checkpoint)
            copied = file_version(checkpoint)
            if copied != version_id:
                raise RegistryError(f"{source}: changed while it was being registered ({version_id} before the "
                                    f"copy, {copied} after); register it once it is completely written")
            write_json_atomic(incoming / CARD_NAME, model_card(checkpoint, version_id, given, source), READ_ONLY)
            os.chmod(checkpoint, READ_ONLY)
            fsync_dir(incoming)
            os.rename(incoming, self.versions_dir / version_id)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        fsync_dir(self.versions_dir)

    def _note_kept_card(self, version_id: str, given: Mapping[str, Any], source: Path) -> None:
        """Warn when a re-registration gives card values that differ from the stored (kept) ones."""
        stored = self.get(version_id).card
        differ = [name for name, value in given.items() if name != "code_version" and value is not None and (
            any(stored[name].get(t) != h for t, h in value.items()) if name == "data_manifests"
            else stored.get(name) != value)]
        if differ:
            warnings.warn(f"{source}: already registered as {version_id}; versions are immutable, so its card keeps "
                          f"{differ} as first registered and the values given now are ignored", stacklevel=3)

    def _move(self, name: str, current: str | None, target: str, who: str, why: str, gate_report: str | None,
              action: str) -> dict[str, Any]:
        """Log the move, then apply it to aliases.json (lock held)."""
        entry = {"time": now(), "who": who, "alias": name, "from": current, "to": target, "why": why,
                 "gate_report": gate_report, "action": action}
        append_json_line(self.log_path, entry)
        aliases = self.aliases()
        aliases[name] = target
        write_json_atomic(self.aliases_path, aliases)
        return entry

    def _recover(self) -> None:
        """Clean up after killed writers (lock held): temporaries, a torn log line, aliases.json behind the log."""
        for entry in self.versions_dir.iterdir():
            if entry.name.startswith(INCOMING_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
                logger.info("removed %s, left by a writer that stopped while registering", entry)
        for entry in self.root.iterdir():
            if entry.name.startswith(".") and TEMPORARY_MARK in entry.name and entry.is_file():
                entry.unlink(missing_ok=True)
        cut = cut_torn_tail(self.log_path)
        if cut:
            warnings.warn(f"{self.log_path}: its last line was incomplete ({cut} bytes without a newline: a writer "
                          "stopped mid-append, before the move reached aliases.json); ignored and removed",
                          stacklevel=4)
        entries = self.moves()
        problem = self._alias_problem(entries)
        if problem is not None:
            write_json_atomic(self.aliases_path, {e["alias"]: e["to"] for e in entries})
            warnings.warn(problem, stacklevel=4)

    def _alias_problem(self, entries: list[dict[str, Any]]) -> str | None:
        """How aliases.json differs from the log's last moves, in words; ``None`` when it does not."""
        expected = {entry["alias"]: entry["to"] for entry in entries}
        try:
            found = self.aliases()
        except RegistryError as err:
            return f"{err}; rewritten from {self.log_path.name}"
        if found == expected:
            return None
        last = entries[-1] if entries else None
        if last is not None:
            before = {k: v for k, v in expected.items() if k != last["alias"]}
            if last["from"] is not None:
                before[last["alias"]] = last["from"]
            if found == before:
                return (f"{self.aliases_path}: the last logged move ({last['alias']}: {last['from']} -> {last['to']}, "
                        f"{last['time']}) had not reached it (a writer stopped in between); completed")
        differ = sorted(k for k in found.keys() | expected.keys() if found.get(k) != expected.get(k))
        found_text = ", ".join(f"{k} -> {found.get(k)}" for k in differ)
        restored = ", ".join(f"{k} -> {expected.get(k)}" for k in differ)
        return (f"{self.aliases_path}: had {found_text}, which {self.log_path.name} does not record (aliases move "
                f"only through Registry.set_alias); restored {restored} from the log")

    def _mirror(self, method: str, *args: Any) -> None:
        """Tell every mirror; a failure is raised after the change is already written here."""
        for mirror in self.mirrors:
            try:
                getattr(mirror, method)(*args)
            except Exception as err:
                raise RegistryError(f"{type(mirror).__name__}.{method} failed ({type(err).__name__}: {err}); the "
                                    f"registry at {self.root} already holds the change") from err


def _check_alias(name: str) -> None:
    if not isinstance(name, str) or not ALIAS_NAME.match(name):
        raise ValueError(f"alias {name!r}: expected a letter then letters, digits, '_', '.' or '-' (64 at most)")


def _check_text(**values: str) -> None:
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must say something (a non-empty string), got {value!r}")
