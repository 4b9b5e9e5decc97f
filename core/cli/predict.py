"""``python -m core predict RUN_DIR IMAGE...``: classify images with a run's exported model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "classify images with a finished run's exported model (model.pt2, no training code)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run (or its model/ folder)")
    parser.add_argument(
        "images", type=Path, nargs="+", metavar="IMAGE", help="image files, or one folder or zip of images"
    )
    parser.add_argument("--top", type=int, default=3, help="how many classes to show per image (default 3)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write one CSV line per image to FILE")


def run(args: argparse.Namespace) -> int:
    from core.artifacts.batch import Row, predict_many, to_csv
    from core.artifacts.predict import Predictor
    from core.cli import CliError, say

    if args.top < 1:
        raise CliError(f"--top must be at least 1, not {args.top}")
    predictor = Predictor(model_dir_of(args.run_dir))
    [single] = args.images if len(args.images) == 1 else [None]
    if single is not None and (single.is_dir() or single.suffix.lower() == ".zip"):
        rows = predict_many(predictor, single, top_k=args.top)
    else:
        predictions = predictor.predict([str(p) for p in args.images], top_k=args.top)
        rows = [Row(p.file, p.top) for p in predictions]
    if args.csv:
        args.csv.write_text(to_csv(rows, args.top))
        say(f"{len(rows):,} images classified: {args.csv}")
    elif args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        for row in rows:
            ranked = ", ".join(f"{label} {probability:.1%}" for label, probability in row.top)
            say(f"{row.file}: {ranked or row.error}")
    return 0


def model_dir_of(run_dir: Path) -> Path:
    """A run's ``model/`` folder, or the folder given when it is a model folder itself."""
    from core.storage import RunFiles

    model_dir = RunFiles(run_dir).model_dir
    return model_dir if model_dir.is_dir() else run_dir
