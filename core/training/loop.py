"""The inner loop: one epoch of optimisation, one pass of evaluation, the learning-rate curve.

Training batches come from a ``BatchSource`` (cached features for frozen bodies, decoded images
otherwise), so the same ``train_one_epoch`` serves every case.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
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
    """A fresh shuffle of ``range(count)`` cut into batches that all have one size.

    One shape for every step of a run: under ``cudnn.benchmark`` each new input shape autotunes
    every convolution again (forward, and backward in training), so a short last batch would be a
    second shape every epoch. The last batch is filled from the start of the same shuffle: every
    sample is seen at least once, fewer than a batch of them twice, and never twice in one batch
    (which would also weigh one image double in BatchNorm's statistics). A data set smaller than
    the batch is one batch of all of it.
    """
    if count == 0:
        return []
    size = min(batch_size, count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    fill = -count % size
    return list(torch.cat([order, order[:fill]]).split(size))


class EpochTotals:
    """An epoch's running sums, kept on the device so that no step waits for the device.

    Reading a number from a GPU makes the CPU wait for all the work queued before it; a read
    per step keeps the card idle while the CPU prepares the next step. ``add`` only queues
    arithmetic; ``read`` copies everything back at once, when a progress report is due and at
    the end of the epoch. Steps with a non-finite loss add nothing. ``skips_allowed`` is how many
    of them in a row are tolerated (fp16's grad scaler skips such a step, and ``MAX_SKIPPED_STEPS``
    in a row mean the weights have blown up; without a scaler, none): the first step past that
    is what ``read`` reports, by raising ``Diverged``.
    """

    def __init__(self, device: torch.device, skips_allowed: int) -> None:
        self.dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.skips_allowed = skips_allowed
        self.sums = torch.zeros(3, dtype=self.dtype, device=device)  # loss sum, correct, seen
        self.bad_run = torch.zeros((), dtype=torch.int64, device=device)  # non-finite steps in a row
        self.failed = torch.tensor([-1.0, 0.0], dtype=self.dtype, device=device)  # first step, its loss
        self.last_read = [0.0, 0.0, 0.0]

    def add(self, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, images: int) -> None:
        loss_sum = loss_sum.detach().to(self.dtype)
        finite = torch.isfinite(loss_sum)
        values = torch.stack([loss_sum, correct.to(self.dtype), torch.full_like(loss_sum, images)])
        self.sums += torch.where(finite, values, 0.0)
        self.bad_run = torch.where(finite, 0, self.bad_run + 1)
        first_failure = (self.bad_run > self.skips_allowed) & (self.failed[0] < 0)
        failure = torch.stack([torch.full_like(loss_sum, step), loss_sum / images])
        self.failed = torch.where(first_failure, failure, self.failed)

    def read(self) -> tuple[float | None, float]:
        """The mean loss of the steps since the last read (``None`` if all were skipped) and the
        images seen so far; raises ``Diverged`` at the first step past the skips allowed."""
        loss_sum, correct, seen, failed_step, failed_loss = torch.cat([self.sums, self.failed]).tolist()
        if failed_step >= 0:
            raise Diverged(int(failed_step) + 1, failed_loss)
        new_loss, new_seen = loss_sum - self.last_read[0], seen - self.last_read[2]
        self.last_read = [loss_sum, correct, seen]
        return (new_loss / new_seen if new_seen else None), seen


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

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; returns the batch's summed loss and its number of correct
        predictions as tensors on the device, so that the step never waits for the device."""
        with self.accel.autocast():
            output = self.model(inputs)
        loss, logits = self.loss(output, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        correct = (logits.argmax(1) == labels).sum()
        return loss.detach() * len(labels), correct


@contextlib.contextmanager
def fresh_batch_norm_statistics(model: nn.Module) -> Iterator[None]:
    """For one epoch, BatchNorm's running statistics forgotten and averaged afresh over its
    batches (``momentum=None``: a cumulative average), then the usual momentum back.

    After a change of image size (progressive resizing) the old size's statistics describe
    inputs the network no longer sees (Touvron et al. 2019), and at a momentum of 0.1 a short
    epoch would leave much of them in. Layers whose parameters are frozen keep theirs.
    """
    norms = [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.track_running_stats
        and any(p.requires_grad for p in module.parameters(recurse=False))
    ]
    momenta = [module.momentum for module in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    try:
        yield
    finally:
        for module, momentum in zip(norms, momenta, strict=True):
            module.momentum = momentum


def train_one_epoch(
    opt: Optimisation,
    source: BatchSource,
    batches: list[torch.Tensor],
    epoch: int,
    lr_factor: Callable[[int], float],
    on_batch: OnBatch,
    ranks: Ranks,
    report_every_s: float = 0.0,
) -> tuple[float, float]:
    """One pass over ``batches``; returns mean loss and accuracy over all ranks' samples.

    Losses and counts stay on the device (``EpochTotals``) and are read at the first step, then
    when ``report_every_s`` has passed since the last read, and at the last step; each read that
    saw a step calls ``on_batch`` with the mean loss since the read before. Raises ``Diverged``
    at the first read after a step whose loss is not finite, naming that step, unless fp16's
    grad scaler skipped it (it skips any step with non-finite gradients): then the step counts
    for nothing and goes unreported, up to ``MAX_SKIPPED_STEPS`` in a row.
    """
    opt.train_mode()
    totals = EpochTotals(opt.accel.device, MAX_SKIPPED_STEPS if opt.scaler.is_enabled() else 0)
    started = last_read = time.perf_counter()
    # Ranks' shares differ by a sample, so their batch counts can differ by one: Join lets the
    # rank that finishes first shadow the other's gradient all-reduce instead of hanging.
    joined = opt.model.join() if ranks.distributed else contextlib.nullcontext()
    with joined:
        for step, indices in enumerate(batches):
            opt.set_lr(lr_factor(step))
            inputs, labels = source.load(indices, epoch)
            totals.add(step, *opt.step(inputs, labels), len(labels))
            if step in (0, len(batches) - 1) or time.perf_counter() - last_read >= report_every_s:
                loss, seen = totals.read()
                last_read = time.perf_counter()
                if loss is not None:
                    on_batch(step + 1, len(batches), loss, seen * ranks.world / (last_read - started))
    sums = _sum_over_ranks(totals.sums) if ranks.distributed else totals.sums
    loss_sum, correct, seen = sums.tolist()
    return loss_sum / max(1.0, seen), correct / max(1.0, seen)


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


def _sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    summed = values.clone()  # on the training device: nccl reduces GPU tensors only
    dist.all_reduce(summed)
    return summed
