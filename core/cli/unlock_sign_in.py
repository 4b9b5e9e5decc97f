"""``python -m core unlock-sign-in NAME`` (or ``--all``): an admin's way out of a lock-out.

Failed password sign-ins make the next tries wait (``core.access.throttle``). When someone is
kept out and should not be, this forgets the failures of the name they type, from every address,
or with ``--all`` every failure counted on this home folder; the running server sees it at once.
"""

from __future__ import annotations

import argparse

from core import access
from core.access.throttle import FailureThrottle
from core.cli import CliError

HELP = "forget failed password sign-ins: of one name, or --all"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="the name typed at the sign-in (not case-sensitive)")
    parser.add_argument("--all", action="store_true", help="every failure, of every name and address")


def run(args: argparse.Namespace) -> int:
    if bool(args.name) == args.all:
        raise CliError("name one person to unlock, or pass --all")
    name = None if args.all else access.owner_name(args.name)
    gone = FailureThrottle().unlock(name)
    print(f"unlocked {name or 'everyone'}: {gone} failure record(s) forgotten")
    return 0
