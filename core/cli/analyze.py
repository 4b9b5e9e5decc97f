"""``python -m core analyze``: measure a data set and advise on it from the numbers.

The plan the evidence picks (the new layer cross-validated on every frozen option's features, a
learning curve for the size), the shift from ImageNet named (BatchNorm shift by depth), the
backbones ranked on frozen features (LogME, k-NN, ImageNet top-1); ``--race`` then races the
advised plan against the others (``core.experiments.race``) to check the advice.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from core.analysis.record import AnalysisRecord, RaceReading
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
        "--race",
        type=positive_int,
        metavar="EPOCHS",
        help="also race the plans, fine-tunes for EPOCHS at most",
    )
    parser.add_argument(
        "--race-image-size",
        type=positive_int,
        metavar="PX",
        help="the fine-tunes' input size (default: half the backbone's)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_owner_argument(parser)  # the race's runs


def run(args: argparse.Namespace) -> int:
    from core.analysis.analyse import AnalysisPlan, analyse
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
        result = analyse(dataset, plan, display).to_record()
    finally:
        display.close()
    if args.race:
        from core.experiments.race import REPEATS, run_race, start_race

        race = start_race(
            result, dataset.root, epochs=args.race, seed=args.seed, image_size=args.race_image_size,
            owner=args.owner,
        )  # fmt: skip
        names = ", ".join(c.label for c in race.contenders)
        say(
            f"racing {names}; fine-tunes for {args.race} epoch(s), {REPEATS} seeds each: race {race.race_id}",
            file=sys.stderr,
        )
        standing = run_race(race, say=lambda line: say(line, file=sys.stderr))
        result = replace(result, race=standing.to_record())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        say(*_summary(result))
    return 0


def _summary(result: AnalysisRecord) -> list[str]:
    """The advice in a few lines, for people: the plan and its numbers first, then the rest."""
    evidence, curve = result.evidence, result.learning_curve
    points = ", ".join(f"{p.images} images {p.head_accuracy.value:.0%}" for p in curve.points)
    lines = [
        f"plan: {result.plan}",
        f"shift: {result.shift_type.words}",
        f"learning curve: {points or 'too few images'} ({curve.shape}, {curve.per_doubling:+.1%} per doubling)",
        (
            f"similarity {result.similarity:.2f} (deepest BatchNorm shift {evidence.deepest_shift:.3f}; "
            f"ImageNet top-1 probability {evidence.top1_probability:.2f})"
        ),
        f"case {result.recommended_case}: {result.advice.name} — {result.advice.rationale}",
        f"backbone {result.backbone} ({result.ranking_note})",
    ]
    for entry in result.backbone_ranking:
        lines.append(
            f"  {entry.name:<34} LogME {entry.logme.value:+.3f}  k-NN {entry.knn.value:.1%}  "
            f"top-1 {entry.imagenet_top1 or '-'}  {entry.images_per_s:.0f} img/s"
        )
    for stage in result.stage_scores:
        head = stage.head_accuracy
        held_out = f"{head.value:.1%} [{head.low:.0%}, {head.high:.0%}]" if head else "-"
        where = "whole body (case 1)" if stage.whole_body else f"stage {stage.index} {stage.stage}"
        lines.append(f"  {where:<34} new layer {held_out}  k-NN {stage.knn.value:.1%}")
    lines.append(f"case 2 would cut at {result.cut}")
    if result.race:
        lines += _race_lines(result.race)
    return lines


def _race_lines(race: RaceReading) -> list[str]:
    """Each contender's score, time and fate against the advice, then the verdict."""
    lines = []
    for entry in race.contenders:
        shown = "-" if entry.accuracy is None else f"{entry.accuracy:.1%} ± {entry.spread:.1%}"
        dropped = f", dropped after epoch {entry.dropped_after}" if entry.dropped_after is not None else ""
        lines.append(
            f"  {entry.label:<34} {shown}  {entry.seconds or 0:.0f} s  {entry.versus_advice or '-'}{dropped}"
        )
    return [*lines, f"race: {race.summary}"]
