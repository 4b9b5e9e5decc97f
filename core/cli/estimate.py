"""``python -m core estimate``: time two real batches of a plan to predict its epoch time."""

from __future__ import annotations

import argparse
import json

HELP = "estimate a plan's preparation and per-epoch time on this machine from two real batches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", help="the plan as JSON text, or a path to a plan.json")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from core.training.estimate import time_plan_here
    from core.training.plan import Plan

    result = time_plan_here(Plan.from_dict(_plan_fields(args.plan)))
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"{result.total_s:.1f} s in all: prepare {result.prepare_s:.1f} s, then {result.epoch_s:.1f} s "
            f"per epoch for {result.epochs} epochs, export {result.export_s:.1f} s "
            f"on {result.device} ({result.precision})"
        )
    return 0


def _plan_fields(argument: str) -> object:
    """The JSON in ``argument``, or in the file it names."""
    from pathlib import Path

    from core.cli import CliError

    try:
        named_file = Path(argument).is_file()
    except OSError:  # JSON text too long to be a file name
        named_file = False
    text = Path(argument).read_text() if named_file else argument
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"the plan is neither a plan.json file nor valid JSON: {exc}") from exc
