"""``python -m core explain RUN_DIR IMAGE [--class C] --out heat.png``: where the model looked."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw a Grad-CAM heatmap of a finished run's model over one image (the predicted class, or --class)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run")
    parser.add_argument("image", type=Path, metavar="IMAGE", help="an image file")
    parser.add_argument(
        "--class", dest="label", metavar="C", help="the class to explain (default: the predicted one)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="PNG", help="where to write the overlay (a PNG)"
    )


def run(args: argparse.Namespace) -> int:
    from core.cli import say
    from core.explain.heatmap import Explainer

    explainer = Explainer.of_run(args.run_dir)
    [heatmap] = explainer.explain([args.image], args.label)
    heatmap.overlay.save(args.out, format="PNG")
    say(
        f"{args.out}: {explainer.layer.label()} for {heatmap.label} ({heatmap.probability:.1%}); "
        f"the model answers {heatmap.predicted}"
    )
    return 0
