"""``python -m ldoctor.registry --root DIR COMMAND``: the model registry from a shell.

Commands: ``list`` (versions, oldest first, with their aliases), ``show ID|ALIAS`` (the card), ``register CKPT``
(prints the version id), ``promote ID --alias NAME --why TEXT`` (move an alias), ``rollback [--alias NAME] --why
TEXT``, ``log [--alias NAME]`` (the moves, one JSON object a line). ``--who`` defaults to the login name.

Example:
    python -m ldoctor.registry --root models register outputs/last.ckpt --card card.json
    python -m ldoctor.registry --root models promote sha256:0123456789abcdef --why "first model"
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from ldoctor.registry.errors import RegistryError
from ldoctor.registry.registry import CHAMPION, Registry


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (one sub-command per registry operation)."""
    parser = argparse.ArgumentParser(prog="python -m ldoctor.registry", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--root", required=True, type=Path, help="the registry folder")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="versions, oldest first")
    show = commands.add_parser("show", help="a version's path and card")
    show.add_argument("version", help="version id or alias")
    register = commands.add_parser("register", help="add a checkpoint as a version; prints its id")
    register.add_argument("checkpoint", type=Path)
    register.add_argument("--card", type=Path, help="JSON file with the caller's card fields (parent, "
                                                    "data_manifests, config, gate_report, code_version)")
    for name in ("promote", "rollback"):
        command = commands.add_parser(name, help="point an alias at a version" if name == "promote"
                                      else "move an alias back to its previous version")
        if name == "promote":
            command.add_argument("version", help="version id (or an alias, resolved)")
            command.add_argument("--gate-report", help="id of the gate report that decided it")
        command.add_argument("--alias", default=CHAMPION)
        command.add_argument("--who", help="who moves it (default: the login name)")
        command.add_argument("--why", required=True)
    log = commands.add_parser("log", help="alias moves, oldest first, one JSON object a line")
    log.add_argument("--alias", help="only this alias")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a registry error exits with status 2 and the message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "who", "") is None:
        args.who = login_name() or parser.error("cannot tell the login name: give --who")
    try:
        registry = Registry(args.root, create=args.command == "register")
        for line in run(registry, args):
            print(line)
    except (RegistryError, FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{parser.prog} {args.command}: error: {err}\n")
    return 0


def login_name() -> str | None:
    """The user's login name, ``None`` where the system cannot tell (a container without a user entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


def read_card(path: Path) -> dict:
    """The caller's card fields from a JSON file, naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); expected the card fields as a JSON object") from None


def run(registry: Registry, args: argparse.Namespace) -> list[str]:
    """The output lines of the command ``args.command``."""
    if args.command == "list":
        aliases = registry.aliases()
        return [f"{v.id}  {v.card.get('created')}  parent={v.card.get('parent')}  tasks={','.join(v.card['tasks'])}"
                f"  aliases={','.join(sorted(a for a, i in aliases.items() if i == v.id)) or '-'}"
                for v in registry.versions()]
    if args.command == "show":
        version = registry.get(args.version)
        return [json.dumps({"id": version.id, "path": str(version.path), "card": version.card}, indent=2)]
    if args.command == "register":
        card = read_card(args.card) if args.card else None
        return [registry.register(args.checkpoint, card)]
    if args.command == "promote":
        before = registry.aliases().get(args.alias)
        registry.set_alias(args.alias, args.version, args.who, args.why, args.gate_report)
        return [f"{args.alias}: {before} -> {registry.aliases()[args.alias]}"]
    if args.command == "rollback":
        before = registry.aliases().get(args.alias)
        return [f"{args.alias}: {before} -> {registry.rollback(args.alias, who=args.who, why=args.why)}"]
    moves = registry.history(args.alias) if args.alias else registry.moves()
    return [json.dumps(entry, sort_keys=True) for entry in moves]


if __name__ == "__main__":
    sys.exit(main())
