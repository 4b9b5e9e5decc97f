"""How close the Train page's estimate comes to the real first epoch, in the same run.

    .venv/bin/python bench/bench_estimate.py [--data samples/digits.zip] [--size 96]

For each case it times ``core.training.estimate.estimate`` (two real batches) and then a real run of one
epoch, from the start of ``fit`` to its first epoch event, and prints the ratio. The issue's bar
is a ratio within 0.5-2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.training.estimate import estimate
from core.training.events import EpochEnd, Event
from core.training.plan import Plan
from core.training.train import fit


def first_epoch_seconds(plan: Plan) -> float:
    started, first = time.perf_counter(), []

    def emit(event: Event) -> None:
        if isinstance(event, EpochEnd) and not first:
            first.append(time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as run_dir:
        fit(plan, Path(run_dir), emit)
    return first[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "samples" / "faces.zip"))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    rows = []
    for case in (1, 3):
        plan = Plan(
            data=args.data,
            backbone=args.backbone,
            case=case,
            epochs=1,
            image_size=args.size,
            batch_size=32,
            augment="none",
        )
        guess = estimate(plan).first_epoch_s
        real = first_epoch_seconds(plan)
        rows.append(
            {
                "case": case,
                "estimate_s": round(guess, 2),
                "real_s": round(real, 2),
                "ratio": round(guess / real, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
