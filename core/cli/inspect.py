"""``python -m core inspect``: validate an image zip (or folder) and print its dataset report."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli import positive_int
from core.data.samples import SAMPLES, sample_path

HELP = "validate a zip of class folders (or a folder) and print its dataset report"
MIB = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        help=f"a .zip of class folders, a folder on this machine, or a bundled sample ({', '.join(SAMPLES)})",
    )
    parser.add_argument(
        "--val-fraction", type=_fraction, default=0.2, help="held out when there is no val/ (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split (default 0)")
    parser.add_argument("--max-total-mb", type=positive_int, help="limit on unpacked image bytes, in MiB")
    parser.add_argument("--max-entries", type=positive_int, help="limit on entries in the zip")
    parser.add_argument("--max-ratio", type=positive_int, help="limit on one entry's compression ratio")
    parser.add_argument("--max-image-pixels", type=positive_int, help="larger images are skipped")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    from core.data import Limits, ingest

    source = Path(args.path)
    if not source.exists() and args.path in SAMPLES:
        source = sample_path(args.path)
    overrides = {
        "max_total_bytes": args.max_total_mb and args.max_total_mb * MIB,
        "max_entries": args.max_entries,
        "max_ratio": args.max_ratio,
        "max_image_pixels": args.max_image_pixels,
    }
    limits = Limits(**{key: value for key, value in overrides.items() if value is not None})
    dataset = ingest(source, limits=limits, val_fraction=args.val_fraction, seed=args.seed)
    report = dataset.report
    if args.json:
        print(report.to_json())
        return 0
    name, count = report.source["name"], report.num_images
    print(f"{name}: {count:,} images in {len(report.classes)} classes ({report.layout})")
    print(f"Split: {report.split}")
    width = max(len("class"), *(len(label) for label in report.classes))
    print(f"  {'class':<{width}}  {'train':>6}  {'val':>6}  {'test':>6}")
    for label in report.classes:
        counts = [report.counts[split][label] for split in ("train", "val", "test")]
        print(f"  {label:<{width}}  " + "  ".join(f"{n:>6}" for n in counts))
    for item in report.skipped:
        print(f"Skipped {item['file']}: {item['reason']}")
    if report.ignored:
        print("Ignored: " + ", ".join(f"{n} {reason}" for reason, n in report.ignored.items()))
    for warning in report.warnings:
        print(f"Warning: {warning}")
    print(f"Stored in {dataset.root}")
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {value}")
    return value
