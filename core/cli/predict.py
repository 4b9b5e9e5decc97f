"""``python -m core predict RUN_DIR IMAGE...``: classify images with a run's exported model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "classify images with a finished run's exported model (model.pt2, no training code)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run (or its model/ folder)")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files to classify")
    parser.add_argument("--top", type=int, default=3, help="how many classes to show per image (default 3)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per image")


def run(args: argparse.Namespace) -> int:
    from core.artifacts.predict import Predictor
    from core.cli import CliError
    from core.storage import RunFiles

    if args.top < 1:
        raise CliError(f"--top must be at least 1, not {args.top}")
    model_dir = RunFiles(args.run_dir).model_dir
    model_dir = model_dir if model_dir.is_dir() else args.run_dir
    predictions = Predictor(model_dir).predict([str(p) for p in args.images], top_k=args.top)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
        return 0
    for prediction in predictions:
        ranked = ", ".join(f"{label} {probability:.1%}" for label, probability in prediction.top)
        print(f"{prediction.file}: {ranked}")
    return 0
