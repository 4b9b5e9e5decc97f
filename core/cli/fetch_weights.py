"""``python -m core fetch-weights NAME...``: put ImageNet weights where offline machines find them.

Run it on a machine with internet (or in an image build): torchvision's weights land in the
torch hub cache (``$TORCH_HOME/hub/checkpoints``), which can then be copied to servers that have
no internet. Extras whose weights ship in a package are reported, not downloaded.
"""

from __future__ import annotations

import argparse
import json

HELP = "download backbones' ImageNet weights into the torch hub cache, for offline use"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="backbone names, e.g. resnet50 vit_b_16")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per backbone")


def run(args: argparse.Namespace) -> int:
    from core.models.backbones import resolve

    backbones = [resolve(name) for name in dict.fromkeys(args.names)]  # all checked before any download
    fetched = []
    for backbone in backbones:
        present = backbone.weights.on_disk()
        path = backbone.weights.fetch(progress=not args.json)
        fetched.append(
            {
                "backbone": backbone.name,
                "path": str(path),
                "bytes": path.stat().st_size,
                "downloaded": not present,
            }
        )
    if args.json:
        print(json.dumps(fetched, indent=2))
        return 0
    for item in fetched:
        state = "downloaded" if item["downloaded"] else "already there"
        print(f"{item['backbone']}: {item['path']} ({item['bytes'] / 2**20:.1f} MiB, {state})")
    return 0
