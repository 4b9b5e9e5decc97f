"""``python -m core inspect``: validate an image zip (or folder) and print its dataset report;
with ``--suspects``, list a finished run's training images that look mislabelled."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core import inert
from core.cli import CliError, positive_int, say
from core.data.samples import SAMPLES, sample_path
from core.limits import MIB

HELP = "print the dataset report of a zip of class folders (or a folder), or with --suspects a run's mislabelled-looking images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        help=f"a .zip of class folders, a folder on this machine, or a bundled sample ({', '.join(SAMPLES)}); "
        "with --suspects, a finished run's folder",
    )
    parser.add_argument(
        "--suspects", action="store_true", help="list the run's images whose label the model finds unlikely"
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
    if args.suspects:
        return _suspects(Path(args.path), args.json)
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
        print(json.dumps(report.to_dict(), indent=2))  # ASCII: no name acts on the terminal
        return 0
    lines = [
        f"{report.source['name']}: {report.num_images:,} images in {len(report.classes)} classes ({report.layout})"
    ]
    lines.append(f"Split: {report.split}")
    labels = [inert.terminal(label) for label in report.classes]  # as shown, for the column's width
    width = max(len("class"), *map(len, labels))
    lines.append(f"  {'class':<{width}}  {'train':>6}  {'val':>6}  {'test':>6}")
    for label, shown in zip(report.classes, labels):
        counts = [report.counts[split][label] for split in ("train", "val", "test")]
        lines.append(f"  {shown:<{width}}  " + "  ".join(f"{n:>6}" for n in counts))
    lines += [f"Skipped {item['file']}: {item['reason']}" for item in report.skipped]
    if report.ignored:
        lines.append("Ignored: " + ", ".join(f"{n} {reason}" for reason, n in report.ignored.items()))
    lines += [f"Warning: {warning}" for warning in report.warnings]
    lines.append(f"Stored in {dataset.root}")
    say(*lines)
    return 0


def _suspects(run_dir: Path, as_json: bool) -> int:
    from core.training.suspects import Suspects

    suspects = Suspects.read(run_dir)
    if suspects is None:
        raise CliError(f"{run_dir} has no suspects.json: give a finished run's folder")
    if as_json:
        print(json.dumps(suspects.to_dict(), indent=2))  # ASCII: no name acts on the terminal
        return 0
    lines = [f"{len(suspects.images)} of {suspects.checked} images look mislabelled ({suspects.source})"]
    lines += [
        f"  {s.file}: labelled {s.given} ({s.given_probability:.0%}), looks like {s.suggested} "
        f"({s.suggested_probability:.0%})"
        for s in suspects.images
    ]
    say(*lines)
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {value}")
    return value
