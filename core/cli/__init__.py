"""``python -m core <command>``: one module per command, registered in one table.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules import heavy libraries (torch) inside ``run`` so that
``--help`` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from core import access, inert, storage
from core.errors import TransferLabError, is_disk_full, one_line

COMMANDS: dict[str, str] = {
    "advise": "core.cli.advise",
    "analyze": "core.cli.analyze",
    "backbones": "core.cli.backbones",
    "fetch-weights": "core.cli.fetch_weights",
    "inspect": "core.cli.inspect",
    "estimate": "core.cli.estimate",
    "train": "core.cli.train",
    "predict": "core.cli.predict",
    "serve": "core.cli.serve",
    "evaluate": "core.cli.evaluate",
    "explain": "core.cli.explain",
    "export": "core.cli.export",
    "hash-password": "core.cli.hash_password",
    "unlock-sign-in": "core.cli.unlock_sign_in",
    "sweep": "core.cli.sweep",
}


class CliError(TransferLabError):
    """A refusal that only the command line makes (an option out of range, an occupied --out)."""


def say(*lines: object, file: TextIO | None = None) -> None:
    """Print each line for people, made inert (``core.inert.terminal``): what the command line
    shows quotes file, class and data set names from uploads, which must not act on a terminal."""
    for line in lines:
        print(inert.terminal(line), file=file or sys.stdout)


def positive_int(text: str) -> int:
    """An argparse type for counts; people write 10,000 or 10_000."""
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def add_owner_argument(parser: argparse.ArgumentParser) -> None:
    """``--owner``: whose runs a command starts; the app shows them to that owner and to admins."""
    parser.add_argument(
        "--owner", type=_owner, default=access.LOCAL_OWNER, help="who owns the runs in the app"
    )


def _owner(text: str) -> str:
    try:
        return access.owner_name(text)
    except access.SignInRefused as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line on stderr, exit 2: scripts read the code, people read the line.
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Transfer Lab from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    storage.keep_caches_home()
    try:
        return args.run(args)
    except (TransferLabError, OSError) as exc:  # a refused input or a failed run: one line, exit code 1
        if isinstance(exc, OSError) and not is_disk_full(exc):
            raise  # any other OSError is a bug, and keeps its traceback
        say(f"python -m core {args.command}: {one_line(exc, limit=None)}", file=sys.stderr)
        return 1
