"""``python -m core backbones``: the catalog of backbones with ImageNet accuracy and cost."""

from __future__ import annotations

import argparse
import json

HELP = "list every backbone with parameters, GFLOPs, ImageNet accuracy and input size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", help="only this family (e.g. ResNet)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per model")


def run(args: argparse.Namespace) -> int:
    from core.cli import CliError
    from core.models.backbones import catalog

    backbones = catalog()
    if args.family:
        families = sorted({b.family.name for b in backbones})
        backbones = [b for b in backbones if b.family.name.lower() == args.family.lower()]
        if not backbones:
            raise CliError(f"unknown family {args.family!r}; choose one of: {', '.join(families)}")
    rows = [backbone.summary() for backbone in backbones]
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
