"""``python -m core export RUN_DIR [--onnx]``: the files a finished run's model lives in."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "list a finished run's exported model files; --onnx adds an ONNX copy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run")
    parser.add_argument(
        "--onnx", action="store_true", help="also write model/model.onnx (needs onnx, onnxscript)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from core.artifacts.export import export_onnx, load_model
    from core.storage import RunFiles

    model_dir = RunFiles(args.run_dir).model_dir
    _, pre, labels = load_model(model_dir)
    if args.onnx:
        export_onnx(model_dir)
    files = sorted(str(p) for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if args.json:
        print(
            json.dumps(
                {"model_dir": str(model_dir), "files": files, "labels": labels, "preprocess": pre.to_dict()},
                indent=2,
            )
        )
        return 0
    print(f"{len(labels)} classes; input {pre.crop}x{pre.crop} px after resizing to {pre.resize} px")
    for file in files:
        print(f"  {file}")
    return 0
