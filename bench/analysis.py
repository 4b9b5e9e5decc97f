"""The data analysis, measured: its speed, how well its ranking predicts fine-tuning, and the race.

    .venv/bin/python bench/analysis.py speed [--images 500] [--backbones efficientnet_lite0]
    .venv/bin/python bench/analysis.py tau [--epochs 3] [--image-size 128] [--samples faces,textures]
    .venv/bin/python bench/analysis.py race [--epochs 3] [--samples faces,digits,textures] [--readme]

- ``speed``: the analysis with its default candidates (every backbone with weights here, or
  ``--backbones``) over N JPEG photo crops (bench/photos.py), each part timed: decoding, the
  forward passes (BatchNorm moments and pooled stages included), scoring the backbones (LogME
  and k-NN with their intervals), and the per-stage cut probe; first in torch alone (the
  baseline), then with the inference runtimes, converting and then from the cached graphs.
- ``tau``: on each bundled sample, the analysis's ranking of every backbone with weights here
  (plus a random-init Lite0) against the accuracy each reaches fine-tuned (case 3) for a few
  epochs; Kendall's tau of the two orders. Reported, never asserted.
- ``race``: ``python -m core analyze SAMPLE --race EPOCHS`` on each set (the three bundled
  samples by default, or any folder or zip), a Markdown table of every contender against the
  advised plan, and on how many sets the advised plan won or tied (reported, never asserted).
  ``--readme`` writes that table into README.md between its race markers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.analysis.record import RaceReading

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SAMPLES = ("faces", "digits", "textures")


def speed(images: int, backbones: tuple[str, ...]) -> None:
    """The analysis three times on the same photos: torch alone (the baseline), then with the
    inference runtimes, once converting (a first analysis) and once from the cached graphs."""
    import hostinfo
    from photos import build

    from core.analysis.analyse import AnalysisPlan, analyse
    from core.data import ingest
    from core.models.runtime import RUNTIMES_ENV

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRANSFER_LAB_HOME"] = tmp
        per_class = -(-images // (4 * 19))  # bench/photos.py: 4 classes x 19 photos x per_class crops
        data = build(Path(tmp) / "photos.zip", per_class=per_class, progress=lambda line: None)
        dataset = ingest(data)
        for name, allowed in (("torch", "torch"), ("runtimes, first", ""), ("runtimes, cached", "")):
            os.environ[RUNTIMES_ENV] = allowed
            started = time.perf_counter()
            result = analyse(dataset, AnalysisPlan(backbones=backbones, sample=images))
            runs[name] = (time.perf_counter() - started, result)
            print(f"{name}: {runs[name][0]:.1f} s", file=sys.stderr, flush=True)
        os.environ.pop(RUNTIMES_ENV)
    baseline = runs["torch"][0]
    names = ", ".join(entry.label for entry in result.ranking.entries)
    print(f"{result.sample_size} photos, {names}; {hostinfo.describe()}")
    print("| run | end to end | against torch | " + " | ".join(result.seconds) + " | runtimes |")
    print("|---" * (len(result.seconds) + 4) + "|")
    for name, (total, found) in runs.items():
        chosen = ", ".join(f"{label}: {r.runtime}" for label, r in found.runtimes.items())
        parts = " | ".join(f"{seconds:.1f} s" for seconds in found.seconds.values())
        print(f"| {name} | {total:.1f} s | {baseline / total:.1f}x | {parts} | {chosen} |")
    print(
        f"BatchNorm similarity {result.similarity.score:.2f} ({result.similarity.answer}); "
        f"plan: case {result.advice.case}, the matrix's column {result.advice.similarity}"
    )


def kendall_tau(first: list[str], second: list[str]) -> float:
    """Kendall's tau-a between two orders of the same items."""
    position = {name: i for i, name in enumerate(second)}
    pairs = list(itertools.combinations(first, 2))
    agree = sum(1 if position[a] < position[b] else -1 for a, b in pairs)
    return agree / len(pairs)


def tau(epochs: int, image_size: int, samples: tuple[str, ...]) -> None:
    from core.analysis.analyse import AnalysisPlan, analyse
    from core.data import ingest
    from core.data.samples import sample_path
    from core.training import train
    from core.training.plan import Plan

    taus = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRANSFER_LAB_HOME"] = tmp
        for name in samples:
            dataset = ingest(sample_path(name))
            result = analyse(dataset, AnalysisPlan(controls=("efficientnet_lite0",)))
            ranked = [entry.label for entry in result.ranking.entries]
            accuracy = {}
            for entry in result.ranking.entries:
                plan = Plan(
                    data=str(sample_path(name)), backbone=entry.backbone, case=3, epochs=epochs,
                    image_size=image_size, weights="imagenet" if entry.pretrained else "none",
                )  # fmt: skip
                run_dir = Path(tmp) / f"{name}-{entry.label.replace(' ', '_')}"
                run_dir.mkdir()
                metrics = train.fit(plan, run_dir, lambda event: None)
                accuracy[entry.label] = metrics["best_val_accuracy"]
            fine_tuned = sorted(accuracy, key=accuracy.get, reverse=True)
            taus.append(kendall_tau(ranked, fine_tuned))
            print(f"{name}: ranked {ranked} ({result.ranking.note})")
            print(f"  fine-tuned ({epochs} epochs, {image_size} px): "
                  + ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()) + f"; Kendall tau {taus[-1]:+.2f}")  # fmt: skip
    print(f"mean Kendall tau over {len(taus)} data sets: {sum(taus) / len(taus):+.2f}")


CONTENDERS = {
    "case1": "case 1",
    "case2": "case 2",
    "case3": "case 3",
    "surgical": "case 3, surgical",
    "case4": "case 4",
}
README_MARKERS = ("<!-- race:start -->", "<!-- race:end -->")


def race(epochs: int, image_size: int | None, sets: tuple[str, ...], readme: bool) -> None:
    """Race each set's plans in a fresh home; print the table, and with ``readme`` write it there."""
    from core.analysis.record import AnalysisRecord

    rows = [
        "| data | advised | " + " | ".join(CONTENDERS.values()) + " | advised plan |",
        "|---" * (len(CONTENDERS) + 3) + "|",
    ]
    held = 0
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TRANSFER_LAB_HOME": tmp}
        for name in sets:
            command = [sys.executable, "-m", "core", "analyze", name, "--json", "--race", str(epochs)]
            if image_size:
                command += ["--race-image-size", str(image_size)]
            out = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
            ).stdout
            standing = AnalysisRecord.from_dict(json.loads(out)).race
            held += standing.outcome in ("won", "tied")
            rows.append(_race_row(Path(name).stem, standing))
            print(rows[-1], flush=True)
    finding = f"The advised plan won or tied on {held} of {len(sets)} sets ({epochs} epoch(s) a fine-tune)."
    table = "\n".join([*rows, "", finding])
    print(table)
    if readme:
        write_between_markers(ROOT / "README.md", table)


def _race_row(name: str, standing: RaceReading) -> str:
    entries = {entry.key: entry for entry in standing.contenders}

    def cell(key: str) -> str:
        entry = entries.get(key)
        if entry is None or entry.accuracy is None:
            return "-"
        fate = f"dropped after epoch {entry.dropped_after}" if entry.dropped_after else entry.versus_advice
        return f"{entry.accuracy:.1%} ± {entry.spread:.1%}, {entry.seconds or 0:.0f} s, {fate}"

    advised = entries[standing.advised].label
    return f"| {name} | {advised} | " + " | ".join(map(cell, CONTENDERS)) + f" | {standing.outcome} |"


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between the race markers in ``path`` with ``text``, nothing else."""
    start, end = README_MARKERS
    before, found, rest = path.read_text().partition(start)
    _, found_end, after = rest.partition(end)
    if not (found and found_end):
        raise SystemExit(f"{path.name} has no {start} ... {end} section to write the race into")
    path.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("speed", "tau", "race"))
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument(
        "--backbones", default="", help="comma-separated (speed); default: every backbone with weights here"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument(
        "--samples", default=",".join(SAMPLES), help="comma-separated bundled samples (tau), or sets to race"
    )
    parser.add_argument("--readme", action="store_true", help="write the race's table into README.md (race)")
    args = parser.parse_args()
    if args.what == "speed":
        speed(args.images, tuple(name for name in args.backbones.split(",") if name))
    elif args.what == "tau":
        tau(args.epochs, args.image_size or 128, tuple(args.samples.split(",")))
    else:
        race(args.epochs, args.image_size, tuple(args.samples.split(",")), args.readme)


if __name__ == "__main__":
    main()
