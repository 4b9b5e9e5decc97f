"""``python -m core advise``: which of the four transfer-learning cases fits a data set."""

from __future__ import annotations

import argparse
import json

from core.advice import cases
from core.cli import positive_int

HELP = "recommend a transfer-learning case for a data set's size and similarity to ImageNet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=positive_int, required=True, help="number of images")
    parser.add_argument("--classes", type=positive_int, required=True, help="number of classes")
    parser.add_argument("--similarity", choices=cases.SIMILARITIES, required=True)
    parser.add_argument(
        "--dividing-line",
        type=positive_int,
        default=cases.DEFAULT_DIVIDING_LINE,
        help=f"images below which a data set counts as small (default {cases.DEFAULT_DIVIDING_LINE:,})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    advice = cases.recommend(args.images, args.classes, args.similarity, args.dividing_line)
    if args.json:
        print(json.dumps(advice.to_dict(), indent=2))
        return 0
    print(f"Case {advice.case}: {advice.name} ({advice.size} data, {advice.similarity} to ImageNet)")
    for number, step in enumerate(advice.steps, 1):
        print(f"  {number}. {step}")
    print(f"Why: {advice.rationale}")
    if advice.alternatives:
        print("Also consider: " + ", ".join(f"case {c} ({cases.CASES[c].name})" for c in advice.alternatives))
    return 0
