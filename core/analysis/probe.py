"""One forward pass of a pre-trained backbone over the sample, keeping what every score needs.

From a single pass: the pooled features the ImageNet head reads (to rank backbones), the pooled
output of every stage (to choose case 2's cut), the ImageNet logits (head evidence) and the
input moments of every BatchNorm layer (domain shift by depth). Features, not images, are kept,
so memory stays bounded by the sample's size times the feature widths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from core.analysis.shift import batchnorm_moments
from core.data import ImageCache
from core.models.adapt import initialised
from core.models.backbones import Backbone
from core.models.preprocess import Preprocess
from core.training.device import Accelerator
from core.training.transforms import to_model_input

BATCH_SIZE = 32


@dataclass(frozen=True)
class Candidate:
    """A backbone to score: with its ImageNet weights, or randomly initialised (a control);
    ``ranked`` False for one that only runs to measure the similarity."""

    backbone: Backbone
    pretrained: bool = True
    ranked: bool = True

    @property
    def label(self) -> str:
        return self.backbone.name if self.pretrained else f"{self.backbone.name} (random init)"

    @property
    def top1(self) -> float | None:
        """The data-free prior: ImageNet accuracy of the weights (none without them)."""
        return self.backbone.top1 if self.pretrained else None

    @property
    def preprocess(self) -> Preprocess:
        return self.backbone.preprocess


@dataclass(frozen=True)
class Probe:
    """What one pass of ``candidate`` over the sample measured."""

    candidate: Candidate
    features: torch.Tensor  # [n, d] what the ImageNet head reads, pooled
    stages: dict[str, torch.Tensor]  # stage path -> [n, channels], pooled, in forward order
    logits: torch.Tensor  # [n, 1000] ImageNet logits
    layer_shifts: list[float]  # per BatchNorm layer, shallow to deep (empty without BatchNorm)
    images_per_s: float  # forward passes only, decoding excluded


def probe(
    candidate: Candidate,
    images: ImageCache,
    accel: Accelerator,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> Probe:
    """Run ``candidate`` over ``images`` (cached at its preprocessing's resize) in eval mode."""
    backbone = candidate.backbone
    model = accel.prepare(initialised(backbone, "imagenet" if candidate.pretrained else "none")).eval()
    collected: dict[str, list[torch.Tensor]] = {"head": [], **{stage: [] for stage in backbone.stages}}
    handles = [_pooled_input(model.get_submodule(backbone.family.head), collected["head"])]
    handles += [
        _pooled_output(model.get_submodule(stage), collected[stage], backbone.family.layout)
        for stage in backbone.stages
    ]
    logits, seconds = [], 0.0
    try:
        with batchnorm_moments(model) as moments, torch.inference_mode():
            for indices in torch.arange(len(images)).split(batch_size):
                inputs = accel.to_device(
                    to_model_input(images.images[indices], backbone.preprocess, train=False)
                )
                started = time.perf_counter()
                with accel.autocast():
                    logits.append(model(inputs).float().cpu())
                seconds += time.perf_counter() - started
                if progress:
                    progress(int(indices[-1]) + 1, len(images))
            shifts = [m.shift() for m in moments.values()]
    finally:
        for handle in handles:
            handle.remove()
    return Probe(
        candidate=candidate,
        features=torch.cat(collected.pop("head")),
        stages={stage: torch.cat(parts) for stage, parts in collected.items()},
        logits=torch.cat(logits),
        layer_shifts=shifts,
        images_per_s=len(images) / max(seconds, 1e-9),
    )


def _pooled_input(head: nn.Module, into: list[torch.Tensor]) -> torch.utils.hooks.RemovableHandle:
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        into.append(args[0].detach().float().flatten(1).cpu())

    return head.register_forward_pre_hook(hook)


def _pooled_output(
    stage: nn.Module, into: list[torch.Tensor], layout: str
) -> torch.utils.hooks.RemovableHandle:
    """Average the stage's output over its positions (grid cells or tokens)."""
    dims = {"nchw": (2, 3), "nhwc": (1, 2), "tokens": (1,)}[layout]

    def hook(module: nn.Module, args: object, out: torch.Tensor) -> None:
        into.append(out.detach().float().mean(dim=dims).cpu())

    return stage.register_forward_hook(hook)
