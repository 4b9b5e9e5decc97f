"""``python -m core estimate``: time two real batches of a plan to predict its epoch time."""

from __future__ import annotations

import argparse
import json

HELP = "estimate a plan's preparation and per-epoch time on this machine from two real batches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", help="the plan as JSON text, or a path to a plan.json")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.cli import CliError
    from core.data import IngestError
    from core.estimate import estimate
    from core.plan import Plan, PlanError

    text = Path(args.plan).read_text() if Path(args.plan).is_file() else args.plan
    try:
        result = estimate(Plan.from_dict(json.loads(text)))
    except json.JSONDecodeError as exc:
        raise CliError(f"the plan is not valid JSON: {exc}") from exc
    except (PlanError, IngestError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"prepare {result.prepare_s:.1f} s, then {result.epoch_s:.1f} s per epoch "
            f"on {result.device} ({result.precision})"
        )
    return 0
