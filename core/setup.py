"""A run's set-up, built once: everything between a plan and its first training step.

The backbone resolved, the model adapted to the case and placed on the device, split into the
frozen body and the part that trains, the preprocessing at the plan's image size, the class
weights, and how images become batches. Training (``core.train``) and the estimate
(``core.estimate``) both start from a ``Setup``, so the estimate times what training will run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core import metrics
from core.adapt import build_model, split_frozen
from core.backbones import Backbone, resolve
from core.batches import ImageSource
from core.data import Dataset, ImageCache, Sample
from core.device import Accelerator, Ranks
from core.plan import Plan
from core.preprocess import Preprocess

# Weights ported from TensorFlow (EfficientNet-Lite, MobileNetV3) move BatchNorm's running
# statistics by 1 % a step; fine-tuned on a new data set they would still describe ImageNet
# after hundreds of steps, and evaluation would normalise with the wrong numbers.
MIN_BN_MOMENTUM = 0.1


@dataclass
class Setup:
    """What a run trains, on what device, with which inputs."""

    plan: Plan
    backbone: Backbone
    classes: list[str]
    pre: Preprocess  # the backbone's preprocessing at the plan's image size
    model: nn.Module  # the adapted model, on the device
    trainable: nn.Module  # what the optimiser updates: the new head (cases 1, 2) or the model
    frozen: nn.Module | None  # the frozen body whose features are computed once (cases 1, 2)
    class_weights: torch.Tensor | None
    accel: Accelerator
    ranks: Ranks
    cache_dir: Path | None  # where large image caches are memory-mapped

    def images(self, samples: Sequence[Sample], *, train: bool) -> ImageSource:
        """Model inputs for ``samples``, decoded once into a uint8 cache, augmented on the device
        when training (each rank with its own seed)."""
        cache = ImageCache(
            samples, self.pre.resize, interpolation=self.pre.interpolation, cache_dir=self.cache_dir
        )
        augment = self.plan.augment if train else "none"
        seed = self.plan.seed * 1000 + self.ranks.rank
        return ImageSource(cache, self.pre, self.accel, train=train, augment=augment, seed=seed)

    def whole(self) -> nn.Module:
        """The model as one module again: what is exported."""
        return self.model if self.frozen is None else nn.Sequential(self.frozen, self.trainable)


def build(plan: Plan, dataset: Dataset, accel: Accelerator, ranks: Ranks | None = None) -> Setup:
    """The set-up of a resolved ``plan`` on ``dataset``: the one place a plan's backbone is resolved."""
    backbone = resolve(plan.backbone)
    classes = list(dataset.classes)
    model = build_model(backbone, plan.case, len(classes), plan.weights, plan.cut)
    if plan.trains_body:
        model = accel.prepare(model)
        _quicken_batch_norm(model)
        trainable, frozen = model, None
    else:
        body, head = split_frozen(model)
        frozen, trainable = accel.prepare(body), accel.prepare(head)
    return Setup(
        plan=plan,
        backbone=backbone,
        classes=classes,
        pre=backbone.preprocess.scaled_to(plan.image_size),
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
