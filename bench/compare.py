"""Transfer Lab against the plain tutorial recipe, on the same data, backbone, device and seeds.

    .venv/bin/python bench/compare.py            # the full comparison (about 40 minutes on 2 cores)
    .venv/bin/python bench/compare.py --quick    # a check of the script and its JSON (< 2 minutes)
    .venv/bin/python bench/compare.py --quick --cases 1,3    # the check the test suite makes
    .venv/bin/python bench/compare.py --cases 3 --precision fp32    # case 3 alone, like with like

For cases 1, 2 and 3 and each seed, it runs ``python -m core train`` and ``bench/baseline.py``
(the PyTorch tutorial's loop) as separate processes, alternating which goes first, and measures
each end to end: wall time from spawn to exit (start-up and, for the engine, export included),
the time at which it first reached the baseline's final validation accuracy, that accuracy, the
peak resident memory, and images per second (training images for case 3; for cases 1 and 2 the
engine's feature pass, against the images the baseline's frozen body processes per second). In
the same process it then times the engine's feature pass (cached uint8 images to features)
against the bare backbone's ``model(x)`` on the same tensors, precision and batch size.

The data is ``bench/photos.py``'s: JPEG crops of the photographs inside scikit-image and
scikit-learn, labelled sharp, blurred, noisy or compressed, split by source photo. The last line
printed is one JSON object: ``case1_speedup``, ``case3_speedup``, ``case1_accuracy``,
``baseline_case1_accuracy``, ``feature_extraction_efficiency`` and the rest of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import hostinfo
import photos


def spawn(command: list[str], home: Path) -> dict:
    """Run ``command`` to its end: wall seconds, peak RSS (MiB), and each stdout line with the
    second (since spawn) it arrived."""
    started, wall_started = time.perf_counter(), time.time()
    env = {**os.environ, "TRANSFER_LAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines = [(time.perf_counter() - started, line) for line in process.stdout]
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed")
    return {"wall": time.perf_counter() - started, "wall_started": wall_started, "peak_mib": usage.ru_maxrss / 1024,
            "lines": lines}  # fmt: skip


def engine(data: Path, case: int, seed: int, args: argparse.Namespace, home: Path) -> dict:
    out = home / "runs" / f"engine-{case}-{seed}-{time.time_ns()}"
    command = [sys.executable, "-m", "core", "train", str(data), "--backbone", args.backbone, "--case", str(case),
               "--epochs", str(args.epochs), "--seed", str(seed), "--out", str(out), "--precision", args.precision,
               "--progressive-resizing", args.progressive_resizing, "--json"]  # fmt: skip
    if args.size:
        command += ["--image-size", str(args.size)]
    run = spawn(command, home)
    metrics = json.loads("".join(line for _, line in run["lines"]))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    epochs = [(e["time"] - run["wall_started"], e["val_accuracy"]) for e in events if e["type"] == "epoch"]
    if case >= 3:
        train_seconds = sum(e["seconds"] for e in events if e["type"] == "epoch")
        train_images = next(e["train"] for e in events if e["type"] == "data")
        rate = len(epochs) * train_images / max(train_seconds, 1e-9)
    else:
        done = [e for e in events if e["type"] == "progress" and e["phase"] == "features"][-1]
        rate = done["images_per_s"]
    return {"wall": run["wall"], "peak_mib": run["peak_mib"], "accuracy": metrics["best_val_accuracy"],
            "epochs": epochs, "images_per_s": rate}  # fmt: skip


def baseline(data: Path, case: int, seed: int, args: argparse.Namespace, home: Path) -> dict:
    command = [sys.executable, str(ROOT / "bench" / "baseline.py"), str(data), "--case", str(case), "--backbone",
               args.backbone, "--epochs", str(args.epochs), "--seed", str(seed)]  # fmt: skip
    if args.size:
        command += ["--image-size", str(args.size)]
    run = spawn(command, home)
    records = [(at, json.loads(line)) for at, line in run["lines"] if line.startswith("{")]
    final = records[-1][1]
    epochs = [(at, record["val_accuracy"]) for at, record in records if "epoch" in record]
    rate = final["train_images_per_s"] if case >= 3 else final["frozen_images_per_s"]
    return {"wall": run["wall"], "peak_mib": run["peak_mib"], "accuracy": final["best_val_accuracy"],
            "epochs": epochs, "images_per_s": rate}  # fmt: skip


def time_to_reach(run: dict, target: float) -> float | None:
    """Seconds from spawn to the first epoch whose validation accuracy reached ``target``."""
    return next((at for at, accuracy in run["epochs"] if accuracy >= target - 1e-9), None)


def feature_efficiency(data: Path, args: argparse.Namespace) -> dict:
    """The feature pass (cached uint8 images to features, in whichever runtime the engine
    chooses) against torch's bare ``model(x)`` on the same input tensors, precision and batch
    size; decoding into the cache timed apart."""
    import torch

    from core.data import ingest
    from core.models.runtime import Engine
    from core.training import setup
    from core.training.batch_size import DEFAULT_BATCH_SIZE
    from core.training.batches import embed
    from core.training.device import accelerator
    from core.training.plan import Plan

    plan = Plan(
        data=str(data), backbone=args.backbone, case=1, image_size=args.size, precision=args.precision
    )
    plan = plan.resolve()
    dataset = ingest(plan.data, seed=plan.seed)
    built = setup.build(plan, dataset, accelerator(plan.device, plan.precision))
    started = time.perf_counter()
    source = built.images(dataset.train, train=False)
    decode_s = time.perf_counter() - started
    body, accel, batch = built.frozen.eval(), built.accel, DEFAULT_BATCH_SIZE
    inputs = [source.load(indices, epoch=0)[0] for indices in torch.arange(len(source)).split(batch)]
    with torch.no_grad(), accel.autocast():
        body(inputs[0])  # warm-up
    best_pass, best_bare, runtime = float("inf"), float("inf"), None
    for _ in range(args.repeats):  # the fastest of a few: the machine's noise out, the work in
        started = time.perf_counter()
        engine = Engine(body, accel, len(source))
        embed(engine, source, batch)
        best_pass, runtime = min(best_pass, time.perf_counter() - started), engine.choice.runtime
        started = time.perf_counter()
        with torch.no_grad(), accel.autocast():
            for x in inputs:
                body(x).cpu()
        best_bare = min(best_bare, time.perf_counter() - started)
    images = len(source)
    return {"images": images, "decode_images_per_s": images / decode_s, "pass_images_per_s": images / best_pass,
            "bare_images_per_s": images / best_bare, "efficiency": best_bare / best_pass,
            "precision": accel.precision, "batch_size": batch, "runtime": runtime}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny data at 64 px, 1 epoch, 1 seed: checks the script"
    )
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--cases", default="1,2,3")
    parser.add_argument(
        "--precision",
        default="auto",
        help="the engine's (the baseline runs fp32): fp32 compares like with like",
    )
    parser.add_argument(
        "--progressive-resizing",
        choices=("on", "off"),
        default="on",
        help="the engine's, in case 3 (the baseline trains every epoch at one size)",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (the full comparison's)")
    args = parser.parse_args()
    full_seeds = tuple(int(seed) for seed in args.seeds.split(","))
    args.epochs, seeds, per_class, args.size = (1, (0,), 1, 64) if args.quick else (10, full_seeds, 5, None)
    args.repeats = 1 if args.quick else 3
    cases = [int(c) for c in args.cases.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        data = photos.build(home / "photos.zip", per_class=per_class, progress=lambda line: None)
        runs: dict[tuple[str, int], list[dict]] = {}
        for seed in seeds:
            for case in cases:
                order = (engine, baseline) if (seed + case) % 2 == 0 else (baseline, engine)
                for runner in order:
                    result = runner(data, case, seed, args, home)
                    runs.setdefault((runner.__name__, case), []).append(result)
                    print(f"seed {seed} case {case} {runner.__name__:>8}: {result['wall']:6.1f} s, "
                          f"accuracy {result['accuracy']:.1%}", file=sys.stderr, flush=True)  # fmt: skip
        efficiency = feature_efficiency(data, args)
    summary = summarise(runs, cases)
    print(table(summary, efficiency, args), file=sys.stderr)
    print(json.dumps(headline(summary, efficiency, args)))


def summarise(runs: dict, cases: list[int]) -> dict:
    summary = {}
    for case in cases:
        ours, theirs = runs[("engine", case)], runs[("baseline", case)]
        target = statistics.mean(r["accuracy"] for r in theirs)
        reach = [time_to_reach(r, target) for r in ours]
        summary[case] = {
            "engine_wall": statistics.mean(r["wall"] for r in ours),
            "baseline_wall": statistics.mean(r["wall"] for r in theirs),
            "engine_accuracy": statistics.mean(r["accuracy"] for r in ours),
            "baseline_accuracy": target,
            "engine_to_baseline_accuracy": statistics.mean(reach) if None not in reach else None,
            "engine_peak_mib": max(r["peak_mib"] for r in ours),
            "baseline_peak_mib": max(r["peak_mib"] for r in theirs),
            "engine_images_per_s": statistics.mean(r["images_per_s"] for r in ours),
            "baseline_images_per_s": statistics.mean(r["images_per_s"] for r in theirs),
        }
        row = summary[case]
        row["speedup"] = row["baseline_wall"] / row["engine_wall"]
        row["images_per_s_ratio"] = row["engine_images_per_s"] / row["baseline_images_per_s"]
    return summary


HEADER = (
    "| case | engine wall | baseline wall | speedup | engine to baseline's accuracy | accuracy engine / baseline "
    "| images/s engine / baseline | peak MiB engine / baseline |"
)


def table(summary: dict, efficiency: dict, args: argparse.Namespace) -> str:
    lines = [
        f"{args.backbone}, {args.epochs} epochs, engine precision {args.precision}, "
        + f"progressive resizing {args.progressive_resizing}, {hostinfo.describe()}",
        HEADER,
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, row in summary.items():
        reach = row["engine_to_baseline_accuracy"]
        lines.append(
            f"| {case} | {row['engine_wall']:.1f} s | {row['baseline_wall']:.1f} s | {row['speedup']:.1f}x "
            f"| {'-' if reach is None else f'{reach:.1f} s'} | {row['engine_accuracy']:.1%} / "
            f"{row['baseline_accuracy']:.1%} | {row['engine_images_per_s']:.0f} / {row['baseline_images_per_s']:.0f} "
            f"({row['images_per_s_ratio']:.1f}x) | {row['engine_peak_mib']:.0f} / {row['baseline_peak_mib']:.0f} |"
        )
    lines.append(
        f"feature pass {efficiency['pass_images_per_s']:.0f} images/s ({efficiency['runtime']}), torch's bare model(x) "
        f"{efficiency['bare_images_per_s']:.0f} images/s ({efficiency['efficiency']:.0%}, {efficiency['precision']}, "
        f"batch {efficiency['batch_size']}); decoding {efficiency['decode_images_per_s']:.0f} images/s"
    )
    return "\n".join(lines)


def headline(summary: dict, efficiency: dict, args: argparse.Namespace) -> dict:
    def row(case: int, key: str) -> float | None:
        return round(summary[case][key], 4) if case in summary and summary[case][key] is not None else None

    return {
        "case1_speedup": row(1, "speedup"),
        "case2_speedup": row(2, "speedup"),
        "case3_speedup": row(3, "speedup"),
        "case3_images_per_s_ratio": row(3, "images_per_s_ratio"),
        "case1_accuracy": row(1, "engine_accuracy"),
        "baseline_case1_accuracy": row(1, "baseline_accuracy"),
        "case2_accuracy": row(2, "engine_accuracy"),
        "baseline_case2_accuracy": row(2, "baseline_accuracy"),
        "case3_accuracy": row(3, "engine_accuracy"),
        "baseline_case3_accuracy": row(3, "baseline_accuracy"),
        "feature_extraction_efficiency": round(efficiency["efficiency"], 4),
        "gpu_bf16_utilisation": None,  # reported on CUDA only
        "progressive_resizing": args.progressive_resizing,
        "quick": args.quick,
        "summary": {str(case): _rounded(values) for case, values in summary.items()},
    }


def _rounded(values: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in values.items()}


if __name__ == "__main__":
    main()
