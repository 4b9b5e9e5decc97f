"""``python -m core hash-password``: the hash of a team password, for the app's password sign-in.

The password is read from the terminal without echo (or from stdin when piped), and only its
salted scrypt hash is printed: that is what goes into ``secrets.toml`` or the environment.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from core import access
from core.cli import CliError

HELP = "print the hash of a team password for TRANSFER_LAB_PASSWORD_HASH or secrets.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the password is never an argument, where the shell's history would keep it."""


def run(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Team password: ")
        if getpass.getpass("Again: ") != password:
            raise CliError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise CliError("a team password needs at least 8 characters")
    print(access.hash_password(password))
    return 0
