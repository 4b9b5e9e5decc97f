"""A run's set-up, built once: everything between a plan and its first training step.

The backbone resolved, the model adapted to the case and placed on the device, split into the
frozen body and the part that trains, the preprocessing at the plan's image size, the class
weights, and how images become batches. Training (``core.training.train``) and the estimate
(``core.training.estimate``) both start from a ``Setup``, so the estimate times what training will run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from core.data import Dataset, ImageCache, Sample
from core.models.adapt import build_model, split_frozen
from core.models.backbones import Backbone, resolve
from core.models.preprocess import Preprocess
from core.models.runtime import Choice, Engine
from core.training import metrics
from core.training.batches import ImageSource, feature_source
from core.training.device import Accelerator, Ranks
from core.training.events import Emit, PhaseMeter
from core.training.head import Standardise
from core.training.loop import BatchSource, shard
from core.training.plan import Plan
from core.training.resizing import SizeSchedule, size_schedule

# Weights ported from TensorFlow (EfficientNet-Lite, MobileNetV3) move BatchNorm's running
# statistics by 1 % a step; fine-tuned on a new data set they would still describe ImageNet
# after hundreds of steps, and evaluation would normalise with the wrong numbers.
MIN_BN_MOMENTUM = 0.1
T = TypeVar("T")


@dataclass
class Setup:
    """What a run trains, on what device, with which inputs."""

    plan: Plan
    backbone: Backbone
    classes: list[str]
    pre: Preprocess  # the backbone's preprocessing at the plan's image size
    schedule: SizeSchedule  # each training epoch's image size (progressive resizing)
    model: nn.Module  # the adapted model, on the device
    trainable: nn.Module  # what training updates: standardisation and new layer (cases 1, 2), or the model
    frozen: nn.Module | None  # the frozen body whose features are computed once (cases 1, 2)
    class_weights: torch.Tensor | None
    accel: Accelerator
    ranks: Ranks
    cache_dir: Path | None  # where large image caches are memory-mapped

    def images(
        self, samples: Sequence[Sample], *, train: bool, progress: Callable[[int, int], None] | None = None
    ) -> ImageSource:
        """Model inputs for ``samples``, decoded once into a uint8 cache, augmented on the device
        when training (each rank with its own seed); ``progress(done, total)`` hears of each image."""
        cache = ImageCache(
            samples,
            self.pre.resize,
            interpolation=self.pre.interpolation,
            cache_dir=self.cache_dir,
            progress=progress,
        )
        augment = self.plan.augment if train else "none"
        seed = self.plan.seed * 1000 + self.ranks.rank
        return ImageSource(cache, self.pre, self.accel, train=train, augment=augment, seed=seed)

    def sources(
        self, dataset: Dataset, emit: Emit, retry_on_oom: Callable[[Callable[[int], T]], T]
    ) -> Sources:
        """This rank's training batches and (rank 0 only) the validation and test ones.

        Every image is decoded once into a uint8 cache; then a frozen body embeds each image once
        (once per augmented view in training), so that epochs train the head on cached features.
        Trained bodies see the decoded images each epoch. Both passes report their progress.
        """
        main = self.ranks.is_main  # only rank 0 evaluates
        splits = {
            "train": [dataset.train[i] for i in shard(len(dataset.train), self.ranks, self.plan.seed)],
            "val": dataset.val if main else [],
            "test": dataset.test if main else [],
        }
        decoding = PhaseMeter(emit, "decoding", sum(map(len, splits.values())))
        sources: dict[str, BatchSource] = {
            name: self.images(samples, train=name == "train", progress=decoding.part())
            for name, samples in splits.items()
            if samples
        }
        if self.frozen is None:
            return Sources(sources["train"], sources.get("val"), sources.get("test"))
        views = self.plan.feature_views if self.plan.augment != "none" else 1
        total = sum(map(len, sources.values())) + (views - 1) * len(sources["train"])
        features = PhaseMeter(emit, "features", total)
        body = Engine(self.frozen.eval(), self.accel, images=total)
        sources = {
            name: retry_on_oom(
                functools.partial(
                    feature_source, body, images, views if name == "train" else 1, progress=features.part()
                )
            )
            for name, images in sources.items()
        }
        return Sources(sources["train"], sources.get("val"), sources.get("test"), body.choice)

    def whole(self) -> nn.Module:
        """The model as one module again: what is exported."""
        return self.model if self.frozen is None else nn.Sequential(self.frozen, self.trainable)


@dataclass(frozen=True)
class Sources:
    """Where each split's batches come from: cached features (cases 1, 2) or decoded images."""

    train: BatchSource
    val: BatchSource | None  # rank 0 alone evaluates
    test: BatchSource | None  # when the data has a test/ split
    features_runtime: Choice | None = None  # what ran the frozen body's feature pass (cases 1, 2)


def build(plan: Plan, dataset: Dataset, accel: Accelerator, ranks: Ranks | None = None) -> Setup:
    """The set-up of a resolved ``plan`` on ``dataset``: the one place a plan's backbone is resolved."""
    backbone = resolve(plan.backbone)
    classes = list(dataset.classes)
    model = build_model(
        backbone, plan.case, len(classes), plan.weights, plan.cut, tune_through=plan.tune_through
    )
    if plan.trains_body:
        model = accel.prepare(model)
        _quicken_batch_norm(model)
        trainable, frozen = model, None
    else:
        body, head = split_frozen(model)
        # The new layer reads standardised features (core.training.head): the same at any depth.
        frozen, trainable = accel.prepare(body), accel.prepare(nn.Sequential(Standardise(), head))
    return Setup(
        plan=plan,
        backbone=backbone,
        classes=classes,
        pre=backbone.preprocess.scaled_to(plan.image_size),
        schedule=size_schedule(plan, backbone),
        model=model,
        trainable=trainable,
        frozen=frozen,
        class_weights=_class_weights(plan, [s.label for s in dataset.train], len(classes), accel),
        accel=accel,
        ranks=ranks or Ranks(),
        cache_dir=dataset.cache_dir,
    )


def _class_weights(plan: Plan, labels: list[int], classes: int, accel: Accelerator) -> torch.Tensor | None:
    """Balanced weights when asked, or by default when the training split is imbalanced."""
    wanted = plan.class_weights == "on" or (
        plan.class_weights == "auto" and metrics.imbalance_ratio(labels, classes) >= metrics.IMBALANCE_RATIO
    )
    return metrics.balanced_class_weights(labels, classes).to(accel.device) if wanted else None


def _quicken_batch_norm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is not None:
            module.momentum = max(module.momentum, MIN_BN_MOMENTUM)
