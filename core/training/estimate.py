"""How long a plan will take here, from timing real batches of its own data on its own device.

The Train page shows this before the user starts. It runs in a job of its own
(kind ``estimate``, ``core.jobs.estimate.estimate``) so that the web server never initialises
CUDA nor pays for the batches.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from core.artifacts.export import export_model
from core.data import ingest
from core.models import backbones
from core.models.adapt import aux_weight
from core.training import head, setup
from core.training.batch_size import DEFAULT_BATCH_SIZE, choose_batch_size
from core.training.batches import ImageSource
from core.training.device import Accelerator, accelerator
from core.training.estimated import Estimate
from core.training.loop import Optimisation
from core.training.plan import AUTO, Plan
from core.training.setup import Setup
from core.training.stages import stage_groups


def time_plan_here(plan: Plan, batches: int = 2) -> Estimate:
    """Time a plan's parts on its own data and device: the set-up, then up to ``batches`` real
    batches (the first warms up, the last counts), the new layer's fit (cases 1 and 2) on
    features of the real size, and a real export.

    Every batch is full (the whole training set, when that is smaller than one), as in training,
    at the batch size training will choose (``core.training.batch_size``, which on a GPU measures
    steps itself: that time is part of the preparation). An epoch trains whole batches, its last
    one filled from the start of the shuffle.
    """
    started = time.perf_counter()
    plan = plan.resolve(backbones.card)
    dataset = ingest(plan.data, val_fraction=plan.val_fraction, seed=plan.seed, exclude=plan.exclude)
    built = setup.build(plan, dataset, accelerator(plan.device, plan.precision))
    setup_s = time.perf_counter() - started
    n_train, n_val = len(dataset.train), len(dataset.val) + len(dataset.test)
    decoded_batch = min(DEFAULT_BATCH_SIZE if plan.batch_size == AUTO else plan.batch_size, n_train)
    count = min(batches, n_train // decoded_batch) * decoded_batch
    started = time.perf_counter()
    source = built.images(dataset.train[:count], train=True)
    decode = (time.perf_counter() - started) / count * (n_train + n_val)
    started = time.perf_counter()
    size = min(choose_batch_size(built, source, n_train).size, n_train)
    choose_s = time.perf_counter() - started
    # Batches of the chosen size from the images decoded (repeated if they are fewer: a step
    # costs the same whichever images it sees).
    chunks = [chunk % count for chunk in torch.arange(min(batches, n_train // size) * size).split(size)]
    trained = math.ceil(n_train / size) * size  # the images an epoch's full batches hold
    accel = built.accel
    if plan.trains_body:
        eval_per_image, _ = _forward_seconds(built.model, source, chunks[-1], accel)
        head_only = plan.head_only_epochs  # case 3's first epochs: cheaper, the body has no gradients
        whole = _train_step_seconds(built, source, chunks[0], chunks[-1], head_only=False)
        first = (
            _train_step_seconds(built, source, chunks[0], chunks[-1], head_only=True) if head_only else whole
        )
        per_image = (head_only * first + (plan.epochs - head_only) * whole) / plan.epochs
        per_image *= built.schedule.pixel_share()  # timed at the full size
        epoch = per_image * trained + eval_per_image * n_val
        prepare = setup_s + decode + choose_s
    else:
        views = plan.feature_views if plan.augment != "none" else 1
        embed_per_image, features = _forward_seconds(built.frozen, source, chunks[-1], accel)
        tuning, epoch = _head_seconds(features, n_train, views, len(dataset.classes), accel)
        prepare = setup_s + decode + embed_per_image * (n_train * views + n_val) + tuning
    export = _export_seconds(built)
    return Estimate(prepare, epoch, export, plan.epochs, n_train, n_val, str(accel.device), accel.precision)


def _train_step_seconds(
    built: Setup, source: ImageSource, warm_up: torch.Tensor, timed: torch.Tensor, *, head_only: bool
) -> float:
    """Seconds per image of a training step on ``timed`` in a stage that trains the whole
    network or (case 3's first) the head alone, after a first step on ``warm_up`` (which may be
    the same batch): first calls pick kernels and allocate."""
    model = built.model.train()
    groups = stage_groups(model, built.plan, head_only)
    opt = Optimisation(model, torch.optim.AdamW(groups), built.accel, aux_weight=aux_weight(model))
    seconds = 0.0
    for indices in (warm_up, timed):
        inputs, labels = source.load(indices, epoch=0)
        seconds = _timed(functools.partial(opt.step, inputs, labels), built.accel)
    return seconds / len(timed)


@torch.no_grad()
def _forward_seconds(
    module: torch.nn.Module, source: ImageSource, indices: torch.Tensor, accel: Accelerator
) -> tuple[float, tuple[int, ...]]:
    """Seconds per image of a forward pass, and the shape of one image's output."""
    module.eval()
    inputs, _ = source.load(indices, epoch=0)
    with accel.autocast():
        outputs = module(inputs)  # warm-up: first calls pick kernels and allocate
        seconds = _timed(lambda: module(inputs), accel)
    return seconds / len(indices), tuple(outputs.shape[1:])


def _head_seconds(
    shape: tuple[int, ...], images: int, views: int, classes: int, accel: Accelerator
) -> tuple[float, float]:
    """Seconds for the penalty's cross-validation and for one epoch of the final fit, from the
    cost of one evaluation of the objective on random features of the real size."""
    folds = head.FOLDS
    cv_rows = min(images, head.CV_MAX_IMAGES) * views * (folds - 1) // folds
    cv = head.CV_EVALUATIONS * (
        _objective_seconds(shape, cv_rows, classes, accel) + head.EVALUATION_OVERHEAD_S
    )
    fit = head.EPOCH_EVALUATIONS * (
        _objective_seconds(shape, images * views, classes, accel) + head.EVALUATION_OVERHEAD_S
    )
    return cv, fit


def _objective_seconds(shape: tuple[int, ...], rows: int, classes: int, accel: Accelerator) -> float:
    features = torch.randn(max(rows, 1), *shape, device=accel.device)
    labels = torch.randint(0, classes, (max(rows, 1),), device=accel.device)
    layer = torch.nn.Linear(math.prod(shape), classes).to(accel.device)
    layer_input = features.flatten(1)
    fit = head.HeadFit(layer, layer_input, labels, weight_decay=1e-2)
    fit.objective().backward()  # warm-up
    return min(_timed(lambda: fit.objective().backward(), accel) for _ in range(3))


def _export_seconds(built: Setup) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        export_model(built.whole(), built.pre, built.classes, Path(folder))
        return time.perf_counter() - started


def _timed(work: Callable[[], object], accel: Accelerator) -> float:
    if accel.device.type == "cuda":
        torch.cuda.synchronize(accel.device)
    started = time.perf_counter()
    work()
    if accel.device.type == "cuda":
        torch.cuda.synchronize(accel.device)
    return time.perf_counter() - started
