"""``python -m core export RUN_DIR [--onnx] [--int8]``: the files a finished run's model lives in."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.artifacts.card import INT8_MAX_DROP
from core.cli import CliError, say

if TYPE_CHECKING:
    from core.artifacts.quantize import Int8Check

HELP = "list a finished run's exported model files; --onnx adds an ONNX copy, --int8 a quantised one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run")
    parser.add_argument(
        "--onnx", action="store_true", help="also write model/model.onnx (needs onnx, onnxscript)"
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write model/model.int8.onnx, calibrated on the run's training images and "
        "checked against the float model on its validation images (needs onnxruntime)",
    )
    parser.add_argument(
        "--max-drop",
        type=_fraction,
        default=INT8_MAX_DROP,
        metavar="FRACTION",
        help=f"--int8: the validation accuracy the int8 model may lose (default: {INT8_MAX_DROP})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from core.artifacts.export import export_onnx, load_model
    from core.storage import RunFiles

    model_dir = RunFiles(args.run_dir).model_dir
    _, pre, labels = load_model(model_dir)
    if args.onnx:
        export_onnx(model_dir)
    int8 = _export_int8(args.run_dir, model_dir, args.max_drop) if args.int8 else None
    files = sorted(str(p) for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if args.json:
        listing = {"model_dir": str(model_dir), "files": files, "labels": labels, "preprocess": pre.to_dict()}
        print(json.dumps(listing | ({"int8": int8.to_dict()} if int8 else {}), indent=2))
        return 0
    print(f"{len(labels)} classes; input {pre.crop}x{pre.crop} px after resizing to {pre.resize} px")
    if int8:
        say(*_int8_lines(int8))
    for file in files:
        print(f"  {file}")
    return 0


def _export_int8(run_dir: Path, model_dir: Path, max_drop: float) -> Int8Check:
    """Quantise on the run's own data: the training split it was trained on calibrates, the
    validation split it was scored on checks."""
    from core.artifacts.quantize import export_int8
    from core.cli.display import RunDisplay
    from core.data import ingest
    from core.storage import RunFiles, read_json
    from core.training.events import phase_progress
    from core.training.plan import Plan

    stored = read_json(RunFiles(run_dir).plan_file)
    if not stored:
        raise CliError(
            f"--int8 needs the run's plan.json in {run_dir}: it names the images to calibrate and check on"
        )
    plan = Plan.from_stored(stored)
    dataset = ingest(plan.data, val_fraction=plan.val_fraction, seed=plan.seed)
    calibration = [sample.path for sample in dataset.train]
    validation = [(sample.path, dataset.classes[sample.label]) for sample in dataset.val]
    display = RunDisplay(sys.stderr)
    try:
        return export_int8(
            model_dir, calibration, validation, max_drop, lambda phase: phase_progress(display, phase)
        )
    finally:
        display.close()


def _int8_lines(check: Int8Check) -> list[str]:
    accuracy = (
        f"int8: validation accuracy {check.int8_accuracy:.1%} against {check.fp32_accuracy:.1%} in fp32 "
        f"on {check.images:,} images, the same class on {check.agreement:.1%}"
    )
    cost = (
        f"int8: {check.int8_bytes / 1e6:.1f} MB against {check.fp32_bytes / 1e6:.1f} MB; "
        f"{check.int8_latency_ms:.1f} ms against {check.fp32_latency_ms:.1f} ms per image "
        f"on {check.cpu} ({check.threads} threads)"
    )
    return [accuracy, cost]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.02, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value}")
    return value
