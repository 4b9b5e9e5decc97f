"""``python -m core analyze``: measure a data set and advise on it from the numbers.

Similarity to ImageNet (BatchNorm shift by depth), the backbones ranked on frozen features
(LogME, k-NN, ImageNet top-1), the case-2 cut, and the case those numbers lead to; ``--race``
then trains cases 1, 2 and 3 briefly to check the advice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli import add_owner_argument, positive_int, say
from core.data.samples import SAMPLES, sample_path

HELP = "measure how close a data set is to ImageNet, rank backbones, pick the cut, and advise"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument(
        "data",
        help=f"a .zip of class folders, a folder on this machine, or a bundled sample ({', '.join(SAMPLES)})",
    )
    parser.add_argument(
        "--backbones", help="comma-separated backbones to rank (default: all with weights here)"
    )
    parser.add_argument(
        "--sample", type=positive_int, default=200, help="images analysed, stratified by class"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and the split")
    parser.add_argument(
        "--budget", type=positive_int, default=300, help="seconds after which no backbone starts"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--race", type=positive_int, metavar="EPOCHS", help="also train cases 1, 2 and 3 for EPOCHS each"
    )
    parser.add_argument(
        "--race-image-size",
        type=positive_int,
        metavar="PX",
        help="the race's input size (default: the backbone's)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_owner_argument(parser)  # the race's runs


def run(args: argparse.Namespace) -> int:
    from core.analysis import AnalysisPlan, analyse
    from core.cli.display import RunDisplay
    from core.data import ingest

    source = Path(args.data)
    if not source.exists() and args.data in SAMPLES:
        source = sample_path(args.data)
    plan = AnalysisPlan(
        backbones=tuple(n.strip() for n in (args.backbones or "").split(",") if n.strip()),
        sample=args.sample,
        seed=args.seed,
        budget_s=float(args.budget),
        device=args.device,
    )
    dataset = ingest(source, seed=args.seed)
    display = RunDisplay(sys.stderr)
    try:
        result = analyse(dataset, plan, display).to_dict()
    finally:
        display.close()
    if args.race:
        from core.jobs.race import run_race, start_race

        race = start_race(
            dataset.root, recommended=result["recommended_case"], backbone=result["backbone"], cut=result["cut"],
            epochs=args.race, seed=args.seed, dataset_name=result["dataset"]["name"],
            plan={"image_size": args.race_image_size} if args.race_image_size else None, owner=args.owner,
        )  # fmt: skip
        say(
            f"racing cases 1, 2 and 3 for {args.race} epoch(s), twice each: race {race.race_id}",
            file=sys.stderr,
        )
        result |= run_race(race, say=lambda line: say(line, file=sys.stderr)).to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        say(*_summary(result))
    return 0


def _summary(result: dict) -> list[str]:
    """The advice in a few lines, for people."""
    evidence = result["evidence"]
    lines = [
        (
            f"similarity {result['similarity']:.2f}: {result['verdict']} "
            f"(deepest BatchNorm shift {evidence['deepest_shift']:.3f}; ImageNet top-1 probability "
            f"{evidence['top1_probability']:.2f})"
        ),
        f"case {result['recommended_case']}: {result['advice']['name']} — {result['advice']['rationale']}",
        f"backbone {result['backbone']} ({result['ranking_note']})",
    ]
    for entry in result["backbone_ranking"]:
        lines.append(
            f"  {entry['name']:<34} LogME {entry['logme']['value']:+.3f}  k-NN {entry['knn']['value']:.1%}  "
            f"top-1 {entry['imagenet_top1'] or '-'}  {entry['images_per_s']:.0f} img/s"
        )
    lines.append(f"cut {result['cut']}: {result['cut_note']}")
    if "race" in result:
        for case, entry in result["race"].items():
            lines.append(
                f"  case {case}: {entry['accuracy']:.1%} on {result['race_judged_on']}, {entry['seconds']:.0f} s"
            )
        lines.append(f"race: {result['race_verdict']}")
    return lines
