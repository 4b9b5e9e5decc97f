"""How long a plan will take here, from timing real batches of its own data on its own device.

The Train page shows this before the user starts. It runs in a process of its own (``python -m
core estimate``) so that the web server never initialises CUDA.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from core.data import ingest
from core.models.adapt import aux_weight
from core.training import setup
from core.training.batches import ImageSource
from core.training.device import Accelerator, accelerator
from core.training.loop import Optimisation
from core.training.plan import Plan
from core.training.setup import Setup


@dataclass(frozen=True)
class Estimate:
    prepare_s: float  # before the first epoch: decoding images (and, cases 1-2, caching features)
    epoch_s: float  # each epoch after that
    train_images: int
    val_images: int
    device: str
    precision: str

    @property
    def first_epoch_s(self) -> float:
        return self.prepare_s + self.epoch_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"first_epoch_s": self.first_epoch_s}


def estimate(plan: Plan, batches: int = 2) -> Estimate:
    """Time up to ``batches`` real batches: the first one warms up, the last one counts.

    Every batch is full (the whole training set, when that is smaller than one): a short
    remainder would spread the fixed cost of a step over fewer images and overstate the cost of
    each, and a batch of one fails BatchNorm in training.
    """
    plan = plan.resolve()
    dataset = ingest(plan.data, val_fraction=plan.val_fraction, seed=plan.seed)
    built = setup.build(plan, dataset, accelerator(plan.device, plan.precision))
    n_train, n_val = len(dataset.train), len(dataset.val) + len(dataset.test)
    size = min(plan.batch_size, n_train)
    chunks = list(torch.arange(min(batches, n_train // size) * size).split(size))
    count = len(chunks) * size
    started = time.perf_counter()
    source = built.images(dataset.train[:count], train=True)
    decode = (time.perf_counter() - started) / count * (n_train + n_val)
    accel = built.accel
    if plan.trains_body:
        train_per_image = _train_step_seconds(built, source, chunks[0], chunks[-1])
        eval_per_image = _forward_seconds(built.model, source, chunks[-1], accel)
        epoch = train_per_image * n_train + eval_per_image * n_val
        prepare = decode
    else:
        views = plan.feature_views if plan.augment != "none" else 1
        embed_per_image = _forward_seconds(built.frozen, source, chunks[-1], accel)
        prepare = decode + embed_per_image * (n_train * views + n_val)
        epoch = 0.0  # the head trains on cached features: negligible next to the preparation
    return Estimate(prepare, epoch, n_train, n_val, str(accel.device), accel.precision)


def estimate_in_subprocess(plan: dict[str, Any], timeout_s: float = 600) -> Estimate:
    """``estimate`` in a fresh process: what the web server calls, since timing a GPU batch
    initialises CUDA. Raises ``RuntimeError`` with the command's one-line message on failure."""
    result = subprocess.run(
        [sys.executable, "-m", "core", "estimate", json.dumps(plan), "--json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit code {result.returncode}"]
        raise RuntimeError(lines[-1])
    data = json.loads(result.stdout)
    return Estimate(**{f.name: data[f.name] for f in fields(Estimate)})


def _train_step_seconds(
    built: Setup, source: ImageSource, warm_up: torch.Tensor, timed: torch.Tensor
) -> float:
    """Seconds per image of a training step on ``timed``, after a first step on ``warm_up``
    (which may be the same batch): first calls pick kernels and allocate."""
    model = built.model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = Optimisation(
        model, torch.optim.AdamW(trainable, lr=1e-4), built.accel, aux_weight=aux_weight(model)
    )
    seconds = 0.0
    for indices in (warm_up, timed):
        inputs, labels = source.load(indices, epoch=0)
        seconds = _timed(functools.partial(opt.step, inputs, labels), built.accel)
    return seconds / len(timed)


@torch.no_grad()
def _forward_seconds(
    module: torch.nn.Module, source: ImageSource, indices: torch.Tensor, accel: Accelerator
) -> float:
    module.eval()
    inputs, _ = source.load(indices, epoch=0)
    with accel.autocast():
        module(inputs)  # warm-up: first calls pick kernels and allocate
        seconds = _timed(lambda: module(inputs), accel)
    return seconds / len(indices)


def _timed(work: Callable[[], object], accel: Accelerator) -> float:
    if accel.device.type == "cuda":
        torch.cuda.synchronize(accel.device)
    started = time.perf_counter()
    work()
    if accel.device.type == "cuda":
        torch.cuda.synchronize(accel.device)
    return time.perf_counter() - started
