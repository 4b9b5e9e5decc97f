"""Throughput of each way a network can run here, training and inference, in one process.

    .venv/bin/python bench/bench_precision.py [--model efficientnet_lite0] [--size 224] [--batch 32]

The baseline is torch in fp32 with contiguous tensors; against it, fp32 with channels_last and
bf16 autocast with channels_last, training and inference; and for inference on the CPU the
inference runtimes the engine may choose (``core.models.runtime``: ONNX Runtime, OpenVINO in
f32 and bf16). Any backbone the surgery knows works, with random weights. The ratios are what
matter: everything runs in the same process on the same random inputs, one after the other. On
a CPU without bf16 units (AVX-512 BF16 / AMX) bf16 is emulated and slower, and the engine stays
in fp32; the first line names the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hostinfo

from core.models import runtime
from core.models.adapt import build_model
from core.models.backbones import resolve
from core.models.runtime import Accelerator
from core.training.device import select_device


def images_per_second(run: Callable[[], None], batch: int, steps: int, device: torch.device) -> float:
    for _ in range(2):  # warm-up: oneDNN and cuDNN pick their kernels on the first calls
        run()
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(steps):
        run()
    _synchronise(device)
    return batch * steps / (time.perf_counter() - started)


def torch_rate(accel: Accelerator, args: argparse.Namespace, train: bool) -> float:
    torch.manual_seed(0)
    model = accel.prepare(build_model(resolve(args.model), 4, 10, weights="none")).train(train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = accel.to_device(torch.randn(args.batch, 3, args.size, args.size))
    labels = torch.randint(0, 10, (args.batch,), device=accel.device)

    def step() -> None:
        with torch.set_grad_enabled(train), accel.autocast():
            loss = torch.nn.functional.cross_entropy(model(inputs).float(), labels)
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return images_per_second(step, args.batch, args.steps, accel.device)


def runtime_rates(args: argparse.Namespace) -> dict[str, float]:
    """Inference in each runtime the engine may choose, from the same ONNX graph."""
    torch.manual_seed(0)
    model = build_model(resolve(args.model), 4, 10, weights="none").eval()
    inputs = torch.randn(args.batch, 3, args.size, args.size)
    graph = runtime.onnx_graph(model, inputs)
    threads, shape = torch.get_num_threads(), tuple(inputs.shape)
    runners = {
        "onnxruntime": lambda: runtime.OnnxRuntime(graph, threads),
        "openvino_f32": lambda: runtime.OpenVino(graph, shape, threads, "f32"),
        "openvino_bf16": lambda: runtime.OpenVino(graph, shape, threads, "bf16"),
    }
    rates = {}
    for name, build in runners.items():
        try:
            run = build()
        except Exception as exc:  # noqa: BLE001 - a runtime not installed, or not for this CPU
            print(f"  {name}: {exc}", file=sys.stderr)
            continue
        rates[name] = images_per_second(lambda run=run: run(inputs), args.batch, args.steps, inputs.device)
    return rates


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = select_device(args.device)
    ways = {
        "fp32": Accelerator(device, "fp32", channels_last=False),
        "fp32_channels_last": Accelerator(device, "fp32", channels_last=True),
        "bf16_channels_last": Accelerator(device, "bf16", channels_last=True),
    }
    results = {
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "device": str(device),
        "machine": hostinfo.describe() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
    }
    for mode, train in (("train", True), ("inference", False)):
        results[mode] = {name: round(torch_rate(accel, args, train), 1) for name, accel in ways.items()}
    if device.type == "cpu":
        results["inference"] |= {name: round(rate, 1) for name, rate in runtime_rates(args).items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{args.model} at {args.size} px, batch {args.batch}, {results['machine']}, {results['threads']} threads"
    )
    for mode in ("train", "inference"):
        baseline = results[mode]["fp32"]
        cells = "  ".join(
            f"{name} {rate:,.1f} ({rate / baseline:.2f}x)" for name, rate in results[mode].items()
        )
        print(f"  {mode:<9} images/s: {cells}")


if __name__ == "__main__":
    main()
