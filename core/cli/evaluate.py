"""``python -m core evaluate RUN_DIR DATA``: a finished run's model scored on other labelled images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.cli import say

HELP = "score a finished run's exported model on a second labelled zip or folder of class folders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run (or its model/ folder)")
    parser.add_argument("data", metavar="DATA", help="a .zip or folder with one folder per class")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")


def run(args: argparse.Namespace) -> int:
    from core.cli.predict import model_dir_of
    from core.training.evaluate import evaluate

    result = evaluate(model_dir_of(args.run_dir), args.data)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    say(
        f"accuracy {result['accuracy']:.1%} on {result['images']:,} images of {result['data']} "
        f"(always answering the most common class: {result['majority_rate']:.1%})"
    )
    for name, scores in result["per_class"].items():
        say(
            f"  {name}: precision {scores['precision']:.0%}, recall {scores['recall']:.0%}, {scores['support']} images"
        )
    return 0
