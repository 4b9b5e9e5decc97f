"""Throughput of fp32 against bf16 autocast + channels_last, training and inference, in one run.

    .venv/bin/python bench/bench_precision.py [--model resnet18] [--size 224] [--batch 32]

Any backbone the surgery knows works (``--model efficientnet_lite0``), with random weights.
The ratios are what matter: both precisions run in the same process on the same machine, one
after the other, with the same random inputs. On CPUs without bf16 units (AVX-512 BF16 / AMX)
bf16 is emulated and slower; ``core.training.device`` then stays in fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.models.adapt import build_model
from core.models.backbones import resolve
from core.training.device import Accelerator, cpu_has_bf16, select_device


def images_per_second(
    accel: Accelerator, model_name: str, size: int, batch: int, steps: int, train: bool
) -> float:
    torch.manual_seed(0)
    model = accel.prepare(build_model(resolve(model_name), 4, 10, weights="none"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = accel.to_device(torch.randn(batch, 3, size, size))
    labels = torch.randint(0, 10, (batch,), device=accel.device)
    model.train(train)

    def step() -> None:
        with torch.set_grad_enabled(train), accel.autocast():
            loss = torch.nn.functional.cross_entropy(model(inputs).float(), labels)
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    for _ in range(2):  # warm-up: oneDNN and cuDNN pick their kernels on the first calls
        step()
    _synchronise(accel.device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronise(accel.device)
    return batch * steps / (time.perf_counter() - started)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = select_device(args.device)
    reduced = Accelerator(device, "bf16", channels_last=True)
    plain = Accelerator(device, "fp32", channels_last=False)
    results = {
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_bf16_units": cpu_has_bf16(),
    }
    for mode, train in (("train", True), ("inference", False)):
        fp32 = images_per_second(plain, args.model, args.size, args.batch, args.steps, train)
        bf16 = images_per_second(reduced, args.model, args.size, args.batch, args.steps, train)
        results[mode] = {
            "fp32_img_s": round(fp32, 1),
            "bf16_channels_last_img_s": round(bf16, 1),
            "speedup": round(bf16 / fp32, 2),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{args.model} at {args.size} px, batch {args.batch}, {results['device']}, "
        f"{results['threads']} threads, bf16 units: {results['cpu_bf16_units']}"
    )
    for mode in ("train", "inference"):
        r = results[mode]
        print(
            f"  {mode:<9} fp32 {r['fp32_img_s']:>7.1f} img/s   bf16+channels_last "
            f"{r['bf16_channels_last_img_s']:>7.1f} img/s   x{r['speedup']:.2f}"
        )


if __name__ == "__main__":
    main()
