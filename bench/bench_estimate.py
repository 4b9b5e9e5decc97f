"""How close the Train page's estimate comes to the real run, on the three bundled samples.

    .venv/bin/python bench/bench_estimate.py [--size 128] [--epochs 3] [--cases 1,3]

For each sample and case it times ``core.training.estimate.time_plan_here`` (the set-up, two real
batches, the new layer's fit at the real size, a real export) and then the real run, from the
start of ``fit`` to its return, in the same process. It prints one line per run and, last, one
JSON object with every error. The issue's bar: the total within ±25% of the real run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.samples import SAMPLES, sample_path
from core.training.estimate import time_plan_here
from core.training.plan import Plan
from core.training.train import fit


def real_seconds(plan: Plan) -> float:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        fit(plan, Path(run_dir), lambda event: None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cases", default="1,3")
    args = parser.parse_args()
    rows = []
    for sample in SAMPLES:
        for case in map(int, args.cases.split(",")):
            plan = Plan(data=str(sample_path(sample)), backbone=args.backbone, case=case, epochs=args.epochs,
                        image_size=args.size)  # fmt: skip
            time_plan_here(plan)  # warm: the data set is ingested and cached for both, as on a server
            guess = time_plan_here(plan).total_s
            real = real_seconds(plan)
            error = guess / real - 1
            rows.append({"sample": sample, "case": case, "estimate_s": round(guess, 1), "real_s": round(real, 1),
                         "error": round(error, 3)})  # fmt: skip
            print(f"{sample:>8} case {case}: estimate {guess:6.1f} s, real {real:6.1f} s, error {error:+.0%}")
    print(json.dumps({"max_abs_error": max(abs(r["error"]) for r in rows), "runs": rows}))


if __name__ == "__main__":
    main()
