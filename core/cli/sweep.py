"""``python -m core sweep [--dry-run]``: apply retention now, for cron; say what went, with sizes.

The app sweeps by itself (when the server starts, then at most hourly while people use it); an
instance nobody opens for days sweeps only from here. The limits are the app's: ``[limits]`` in
the app's ``.streamlit/secrets.toml`` (``--secrets`` names another file) and the environment.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from core import access, storage
from core.cli import CliError, say
from core.housekeeping import retention
from core.limits import human_bytes

HELP = "delete finished runs past their keeping time and data sets nobody needs (retention)"
SECRETS = storage.CODE_ROOT / ".streamlit" / "secrets.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    parser.add_argument(
        "--secrets", type=Path, default=SECRETS, help="the app's secrets.toml, for its [limits] and [access]"
    )


def run(args: argparse.Namespace) -> int:
    limits = access.instance_limits(_secrets(args.secrets))
    swept = retention.sweep(limits, dry_run=args.dry_run)
    kept = (
        "finished runs are kept forever (no keep_runs_days)"
        if limits.keep_runs_days is None
        else f"finished runs are kept {limits.keep_runs_days:g} days"
    )
    if not any(swept.groups().values()):
        say(f"Nothing to delete in {storage.home()}: {kept}.")
        return 0
    say(f"{'Would delete' if swept.dry_run else 'Deleted'} in {storage.home()} ({kept}):")
    for label, group in swept.groups().items():
        if group:
            say(f"  {label}: {len(group)}, {human_bytes(sum(gone.size for gone in group))}")
            for gone in group:
                say(f"    {gone.name}  {human_bytes(gone.size)}  {gone.detail}")
    say(f"{'Would free' if swept.dry_run else 'Freed'} {human_bytes(swept.size)}.")
    return 0


def _secrets(path: Path) -> dict[str, Any]:
    """The secrets file's contents; none when there is no file (a local instance)."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path} is not valid TOML: {exc}") from None
