"""``python -m core backbones``: the catalog of backbones with ImageNet accuracy and cost.

``--write-catalog`` computes the catalog file that the web server reads (``core.models.catalog``):
the server runs it in a child process when the file is missing, and an image build may run it
beforehand so that the first page view does not wait for it.
"""

from __future__ import annotations

import argparse
import json

HELP = "list every backbone with parameters, GFLOPs, ImageNet accuracy and input size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", help="only this family (e.g. ResNet)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per model")
    parser.add_argument(
        "--write-catalog",
        action="store_true",
        help="compute the catalog file the web server reads (once per torch and torchvision version)",
    )


def run(args: argparse.Namespace) -> int:
    from core.cli import CliError
    from core.models import catalog

    if args.write_catalog:
        from core.models.backbones import write_catalog

        print(write_catalog())
        return 0
    cards = catalog.cards()
    if args.family:
        families = sorted({card.family.name for card in cards})
        cards = [card for card in cards if card.family.name.lower() == args.family.lower()]
        if not cards:
            raise CliError(f"unknown family {args.family!r}; choose one of: {', '.join(families)}")
    rows = [card.summary() for card in cards]
    if args.json:
        print(json.dumps(rows, indent=2, allow_nan=False))
        return 0
    print(
        f"{'name':<20} {'family':<18} {'params':>8} {'GFLOPs':>7} {'top1':>6} {'top5':>6} {'input':>5}  weights"
    )
    for r in rows:
        print(
            f"{r['name']:<20} {r['family']:<18} {r['params'] / 1e6:>7.1f}M {_num(r['gflops']):>7} "
            f"{_num(r['top1']):>6} {_num(r['top5']):>6} {r['input_size']:>5}  "
            f"{'offline' if r['offline'] else 'on disk' if r['on_disk'] else 'download'}"
        )
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
