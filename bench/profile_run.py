"""Where a run's time goes: start-up, decode, resize/cache, features, head training, evaluation, export.

    .venv/bin/python bench/profile_run.py DATA.zip --case 1 [--epochs 10] [--backbone efficientnet_lite0]

Runs ``python -m core train``'s ``fit`` in this process with stopwatches around the functions
that do each part, and prints one JSON object of seconds per part (and their sum against the
wall time, so that nothing big goes unaccounted for). ``start-up`` is from the process start
(imports included) to the beginning of ``fit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

PROCESS_STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Decoding in this process, where the stopwatches are: worker processes would hide it.
os.environ["TRANSFER_LAB_DECODE_WORKERS"] = "1"

from core.data import decode
from core.training import batches, setup, train
from core.training.plan import Plan

SECONDS: defaultdict[str, float] = defaultdict(float)


def timed(owner: object, name: str, part: str) -> None:
    """Wrap ``owner.name`` so that its calls add to ``SECONDS[part]`` (outermost calls only)."""
    original: Callable = getattr(owner, name)
    depth = [0]

    def wrapper(*args: object, **kwargs: object) -> object:
        depth[0] += 1
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                SECONDS[part] += time.perf_counter() - started

    setattr(owner, name, wrapper)


def instrument() -> None:
    timed(decode, "read_image", "decode")  # what the cache (and ingestion's validation) decode with
    timed(decode.Image.Image, "resize", "resize/cache")
    timed(setup, "build", "model build and weights")
    timed(batches, "embed", "features")
    timed(train.head, "choose_weight_decay", "head: cross-validation")
    timed(train.head.HeadFit, "step", "head: L-BFGS (cross-validation included)")
    timed(train, "train_one_epoch", "training steps")
    timed(train, "evaluate", "evaluation")
    timed(train, "export_model", "export")
    timed(train.metrics, "report", "metrics")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--case", type=int, default=1)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, help="image size (default: the backbone's)")
    args = parser.parse_args()
    instrument()
    plan = Plan(data=str(args.data.resolve()), backbone=args.backbone, case=args.case, epochs=args.epochs,
                image_size=args.size)  # fmt: skip
    SECONDS["start-up (imports)"] = time.perf_counter() - PROCESS_STARTED
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train.fit(plan, Path(run_dir), lambda event: None)
    wall = time.perf_counter() - started + SECONDS["start-up (imports)"]
    parts = dict(SECONDS)
    parts["resize/cache"] = parts.get("resize/cache", 0.0)
    print(json.dumps({"case": args.case, "wall": round(wall, 2), "accounted": round(sum(parts.values()), 2),
                      **{k: round(v, 2) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}))  # fmt: skip


if __name__ == "__main__":
    main()
