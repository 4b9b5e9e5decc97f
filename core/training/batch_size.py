"""What a plan's ``batch_size: "auto"`` means here: 32 on a CPU, a measured size on a CUDA GPU.

A batch of 32 leaves a large GPU mostly idle: each step is too little work to hide the cost of
launching it. On CUDA the chooser times real training steps of the run's own model, data and
optimiser at 32, 64, ... and stops doubling when the gain in images per second falls under
``MIN_GAIN``, when the next size would not fit in memory with headroom, or when an epoch would
have fewer than ``MIN_STEPS_PER_EPOCH`` steps. ``decide`` is the decision, a pure function of
the measurements; ``measure`` takes them. Training and the estimate both call
``choose_batch_size``, so the estimate times the batch that training will use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from core.models.adapt import aux_weight
from core.training.device import is_out_of_memory, release_cached_memory
from core.training.loop import BatchSource, Optimisation
from core.training.plan import AUTO, MAX_BATCH_SIZE
from core.training.setup import Setup
from core.training.stages import optimizer_for, stage_groups

DEFAULT_BATCH_SIZE = 32  # what "auto" means without measuring, and where measuring starts
MIN_GAIN = 0.10  # doubling the batch must buy at least 10 % more images per second
# Fewer updates per epoch than this and an epoch learns less than the larger batch saves in time:
# a run of a few epochs on a small data set would end before it has converged.
MIN_STEPS_PER_EPOCH = 20
# Of the memory this process could use: the allocator fragments, and evaluation needs some too.
MEMORY_HEADROOM = 0.8
TIMED_STEPS = 2  # after a warm-up step, which autotunes the new shape's convolutions
GIB = 1024**3


@dataclass(frozen=True)
class StepMeasurement:
    """One batch size tried: training speed, and memory at the step's peak and after it."""

    size: int
    images_per_s: float = 0.0
    peak_bytes: int = 0  # during the step: weights, gradients, optimiser state, activations
    steady_bytes: int = 0  # after it: everything but the activations, which grow with the batch
    usable_bytes: float = math.inf  # what this process could allocate in all (in use + free)
    out_of_memory: bool = False

    def predicted_peak(self, size: int) -> float:
        """The peak at another batch size: activations scale with the batch, the rest stays."""
        return self.steady_bytes + (self.peak_bytes - self.steady_bytes) * size / self.size


@dataclass(frozen=True)
class BatchChoice:
    """The batch size a run trains with, why, and the learning-rate factor that goes with it."""

    size: int
    reason: str
    lr_scale: float = 1.0
    measured: tuple[StepMeasurement, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "reason": self.reason,
            "lr_scale": self.lr_scale,
            "measured": [
                {key: value for key, value in asdict(m).items() if value != math.inf} for m in self.measured
            ],
        }


def lr_scale(size: int, optimizer: str) -> float:
    """The factor on the plan's learning rates, which are meant for a batch of 32, at ``size``.

    SGD: linear in the batch (Goyal et al. 2017, "Accurate, Large Minibatch SGD"); Adam and AdamW:
    the square root (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient
    Algorithms"). Both hold with a warm-up, which ``lr_at`` always gives.
    """
    ratio = size / DEFAULT_BATCH_SIZE
    return ratio if optimizer == "sgd" else math.sqrt(ratio)


def decide(measured: Sequence[StepMeasurement], train_images: int, optimizer: str) -> BatchChoice | None:
    """The batch size from the sizes measured so far (32, 64, ... in order), or ``None`` when
    the next doubling is worth measuring. Pure: tests feed it recorded numbers."""
    if measured and measured[-1].out_of_memory:
        *fitted, failed = measured
        if not fitted:  # training's own back-off halves it from there
            return _chosen(failed.size, f"out of memory at {failed.size} already", measured, optimizer)
        return _chosen(fitted[-1].size, f"out of memory at {failed.size}", measured, optimizer)
    if len(measured) >= 2 and measured[-1].images_per_s < measured[-2].images_per_s * (1 + MIN_GAIN):
        before, last = measured[-2:]
        gain = last.images_per_s / before.images_per_s - 1
        reason = f"doubling to {last.size} gained only {gain:.0%} images/s"
        return _chosen(before.size, reason, measured, optimizer)
    size = measured[-1].size if measured else DEFAULT_BATCH_SIZE
    bigger = 2 * size
    if bigger * MIN_STEPS_PER_EPOCH > train_images:
        steps = f"fewer than {MIN_STEPS_PER_EPOCH} steps per epoch of {train_images:,} images"
        reason = f"doubling to {bigger} would leave {steps}"
        return _chosen(size, reason, measured, optimizer)
    if bigger > MAX_BATCH_SIZE:
        return _chosen(
            size, f"doubling to {bigger} would pass the largest batch a plan may have", measured, optimizer
        )
    if measured:
        last = measured[-1]
        needed = last.predicted_peak(bigger)
        if needed > MEMORY_HEADROOM * last.usable_bytes:
            reason = (
                f"doubling to {bigger} would need about {needed / GIB:.1f} GiB, over {MEMORY_HEADROOM:.0%} "
                f"of the {last.usable_bytes / GIB:.1f} GiB usable"
            )
            return _chosen(size, reason, measured, optimizer)
    return None


def choose_batch_size(built: Setup, source: BatchSource, train_images: int) -> BatchChoice:
    """The batch size a run of ``built`` trains with on ``train_images`` (this rank's share).

    A size the plan gives is kept, with its learning rate as given. ``auto`` is 32 but on CUDA
    for cases 3 and 4; cases 1 and 2 train no steps (their batch only sizes the feature pass).
    """
    plan = built.plan
    if plan.batch_size != AUTO:
        return BatchChoice(plan.batch_size, "set by the plan")
    if not plan.trains_body:
        return BatchChoice(DEFAULT_BATCH_SIZE, "the default: a frozen body trains no steps")
    if built.accel.device.type != "cuda":
        return BatchChoice(
            DEFAULT_BATCH_SIZE, f"the default on {built.accel.device.type}: measured on CUDA only"
        )
    return measure(built, source, train_images)


def measure(built: Setup, source: BatchSource, train_images: int) -> BatchChoice:
    """``decide`` on real steps with the plan's optimiser, doubling from 32. The weights, the
    BatchNorm statistics and the random streams are restored afterwards: training starts from
    where it would have started without measuring.

    Runs on any device (a CPU has no memory counters: memory never limits it there), so that
    tests can run it; ``choose_batch_size`` calls it on CUDA only.
    """
    model, device = built.trainable, built.accel.device
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    generator = getattr(source, "generator", None)
    generator_state = generator.get_state() if generator is not None else None
    groups = stage_groups(model, built.plan, head_only=False)  # the whole network: the larger graph
    optimizer = optimizer_for(built.plan.optimizer, groups, built.plan.weight_decay)
    opt = Optimisation(model, optimizer, built.accel, built.class_weights, aux_weight(built.model))
    measured: list[StepMeasurement] = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            while (choice := decide(measured, train_images, built.plan.optimizer)) is None:
                size = measured[-1].size * 2 if measured else DEFAULT_BATCH_SIZE
                measured.append(_measure_step(opt, source, size))
    finally:
        del opt, optimizer
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        if generator is not None:
            generator.set_state(generator_state)
        release_cached_memory(device)
    return choice


def _measure_step(opt: Optimisation, source: BatchSource, size: int) -> StepMeasurement:
    """A warm-up step, then ``TIMED_STEPS`` timed ones, at ``size`` (images repeat if the
    source holds fewer: the cost of a step does not depend on which images it sees)."""
    device = opt.accel.device
    indices = torch.arange(size) % len(source)
    opt.train_mode()
    try:
        opt.step(*source.load(indices, epoch=0))
        _synchronize(device)
        _reset_peak(device)  # after the warm-up, whose autotuning tries kernels with large workspaces
        started = time.perf_counter()
        for _ in range(TIMED_STEPS):
            opt.step(*source.load(indices, epoch=0))
        _synchronize(device)
        seconds = time.perf_counter() - started
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        release_cached_memory(device)
        return StepMeasurement(size, out_of_memory=True)
    peak, steady, usable = _memory(device)
    return StepMeasurement(size, size * TIMED_STEPS / seconds, peak, steady, usable)


def _memory(device: torch.device) -> tuple[int, int, float]:
    """Peak and current bytes allocated, and what this process could have in all."""
    if device.type != "cuda":
        return 0, 0, math.inf
    free, _ = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)  # held by this process's allocator: ours to reuse
    return (
        torch.cuda.max_memory_allocated(device),
        torch.cuda.memory_allocated(device),
        float(free + reserved),
    )


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _chosen(size: int, reason: str, measured: Sequence[StepMeasurement], optimizer: str) -> BatchChoice:
    return BatchChoice(size, reason, lr_scale(size, optimizer), tuple(measured))
