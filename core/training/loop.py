"""The inner loop: one epoch of optimisation, one pass of evaluation, the learning-rate curve.

Training batches come from a ``BatchSource`` (cached features for frozen bodies, decoded images
otherwise), so the same ``train_one_epoch`` serves every case.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from core.models.runtime import Engine
from core.training.device import Accelerator, Ranks, is_out_of_memory, release_cached_memory

WARMUP_FRACTION = 0.05
# Under fp16 the grad scaler skips a step whose loss overflowed and lowers its scale; this many
# skipped steps in a row means the weights themselves have blown up, and skipping will not end.
MAX_SKIPPED_STEPS = 10
Batch = tuple[torch.Tensor, torch.Tensor]
OnBatch = Callable[[int, int, float, float], None]  # step, steps, loss, images_per_s
T = TypeVar("T")


class Diverged(ArithmeticError):
    """A training step whose loss is not a finite number: the weights are no longer usable."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"the loss is {loss} at step {step}")
        self.step, self.loss = step, loss


class BatchSource(Protocol):
    """Index batches of one epoch, and the model inputs and labels of one batch, on the device."""

    def __len__(self) -> int: ...

    def load(self, indices: torch.Tensor, epoch: int) -> Batch: ...


def lr_at(step: int, steps: int, schedule: str) -> float:
    """The learning-rate factor at ``step`` of ``steps``: a short linear warmup, then cosine or flat."""
    warmup = max(1, math.ceil(steps * WARMUP_FRACTION))
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def shard(count: int, ranks: Ranks, seed: int) -> list[int]:
    """This rank's fixed share of ``count`` samples: a seeded shuffle, dealt out like cards.

    A fixed share means each rank decodes (and for frozen bodies, embeds) only its own images;
    shares differ by at most one sample and together hold every sample once.
    """
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return sorted(order[ranks.rank :: ranks.world].tolist())


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """A fresh shuffle of ``range(count)`` cut into batches, each sample exactly once.

    A last batch of one image joins the one before it: BatchNorm cannot normalise a single value.
    """
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@dataclass
class Optimisation:
    """Everything one training step touches."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    accel: Accelerator
    class_weights: torch.Tensor | None = None
    aux_weight: float = 0.0
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.accel.device.type, enabled=self.accel.needs_grad_scaler)

    def train_mode(self) -> None:
        """Training mode, except for BatchNorm layers whose parameters are frozen.

        A frozen layer's running statistics are part of what was frozen: updating them from
        a few small batches would shift the features under the head being trained.
        """
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters(recurse=False)
            ):
                module.eval()

    def loss(self, output: torch.Tensor | tuple, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and main logits. GoogLeNet and Inception v3 return their auxiliary logits too in
        training; those add to the loss with the family's weight (0.3 / 0.4), as in the papers."""
        if isinstance(output, tuple):
            logits, *auxiliary = output
        else:
            logits, auxiliary = output, []
        weight = self.class_weights
        loss = F.cross_entropy(logits.float(), labels, weight=weight)
        for aux in auxiliary:
            if aux is not None:
                loss = loss + self.aux_weight * F.cross_entropy(aux.float(), labels, weight=weight)
        return loss, logits

    def set_lr(self, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        with self.accel.autocast():
            output = self.model(inputs)
        loss, logits = self.loss(output, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        correct = int((logits.argmax(1) == labels).sum())
        return float(loss.detach()) * len(labels), correct


def train_one_epoch(
    opt: Optimisation,
    source: BatchSource,
    batches: list[torch.Tensor],
    epoch: int,
    lr_factor: Callable[[int], float],
    on_batch: OnBatch,
    ranks: Ranks,
) -> tuple[float, float]:
    """One pass over ``batches``; returns mean loss and accuracy over all ranks' samples.

    Raises ``Diverged`` at a step whose loss is not finite, unless fp16's grad scaler skipped
    that step (it skips any step with non-finite gradients): then the step counts for nothing
    and goes unreported, up to ``MAX_SKIPPED_STEPS`` in a row.
    """
    opt.train_mode()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
    skipped = 0
    started = time.perf_counter()
    # Ranks' shares differ by a sample, so their batch counts can differ by one: Join lets the
    # rank that finishes first shadow the other's gradient all-reduce instead of hanging.
    joined = opt.model.join() if ranks.distributed else contextlib.nullcontext()
    with joined:
        for step, indices in enumerate(batches):
            opt.set_lr(lr_factor(step))
            inputs, labels = source.load(indices, epoch)
            loss_sum, correct = opt.step(inputs, labels)
            if not math.isfinite(loss_sum):
                skipped += 1
                if not opt.scaler.is_enabled() or skipped > MAX_SKIPPED_STEPS:
                    raise Diverged(step + 1, loss_sum / len(labels))
                continue
            skipped = 0
            totals += torch.tensor([loss_sum, correct, len(labels)], dtype=torch.float64)
            rate = totals[2].item() * ranks.world / (time.perf_counter() - started)
            on_batch(step + 1, len(batches), loss_sum / len(labels), rate)
    if ranks.distributed:
        totals = _sum_over_ranks(totals, opt.accel.device)
    seen = max(1.0, totals[2].item())
    return totals[0].item() / seen, totals[1].item() / seen


def evaluate(model: nn.Module, source: BatchSource, batch_size: int, accel: Accelerator) -> Batch:
    """Logits (float32, on the CPU) and labels of every sample of ``source``, in order.

    In torch alone: the weights change every epoch, and converting them each time would cost
    more than it saves. On CUDA every batch has the training batch's shape (padded), so that
    cuDNN tunes its kernels once.
    """
    model.eval()
    engine = Engine(model, accel, len(source), runtimes=())
    logits, labels = [], []
    for indices in torch.arange(len(source)).split(batch_size):
        inputs, batch_labels = source.load(indices, epoch=0)
        logits.append(engine(inputs, pad_to=batch_size)[0].float())
        labels.append(batch_labels)
    if not logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits).cpu(), torch.cat(labels).cpu()


def halve_batch_on_oom(
    work: Callable[[int], T], batch_size: int, warn: Callable[[str], None], device: torch.device
) -> tuple[T, int]:
    """``work(batch_size)``, run again at half the batch size after each out-of-memory error.

    Returns the result and the batch size that worked, which the caller keeps for what follows.
    Memory peaks in the first steps at a fixed input size, so redoing the whole piece of work
    loses little.
    """
    while True:
        try:
            return work(batch_size), batch_size
        except Exception as exc:
            if not is_out_of_memory(exc) or batch_size <= 2:
                raise
        release_cached_memory(device)
        batch_size //= 2
        warn(f"out of memory: retrying with batch size {batch_size}")


def _sum_over_ranks(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    import torch.distributed as dist

    on_device = values.to(device)  # nccl reduces GPU tensors only
    dist.all_reduce(on_device)
    return on_device.cpu()
