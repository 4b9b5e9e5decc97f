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

from core.analysis.shift import TAIL, Moments, grid_moments
from core.data import ImageCache
from core.models.adapt import initialised
from core.models.backbones import Backbone
from core.models.preprocess import Preprocess
from core.models.runtime import Choice, Engine, configured_runtimes
from core.training.device import Accelerator
from core.training.transforms import to_model_input

BATCH_SIZE = 32
MOMENT_IMAGES = 128  # images whose BatchNorm moments measure the shift (the first of the sample)


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
    layer_tails: list[float]  # the same, for the most shifted tenth of each layer's channels
    images_per_s: float  # forward passes only, decoding excluded
    runtime: Choice | None = None  # what ran the pass


def probe(
    candidate: Candidate,
    images: ImageCache,
    accel: Accelerator,
    *,
    batch_size: int = BATCH_SIZE,
    moments: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Probe:
    """Run ``candidate`` over ``images`` (cached at its preprocessing's resize) in eval mode.

    With ``moments`` (the reference backbone, whose BatchNorm statistics measure the shift),
    the first ``MOMENT_IMAGES`` images also give every BatchNorm layer's input moments; every
    other batch gives the pooled outputs alone. Each runs in torch or the fastest inference
    runtime here (``core.models.runtime``), except that the graph with every layer's moments as
    outputs is never given to ONNX Runtime: it held gigabytes there and ran slower than in torch,
    where OpenVINO ran it 3x faster than torch (measured on 2 AVX2 cores). A few thousand
    positions per channel from each of 128 images estimate a moment as well as more would.
    """
    backbone = candidate.backbone
    model = accel.prepare(initialised(backbone, "imagenet" if candidate.pretrained else "none")).eval()
    measured = Probed(model, backbone, moments=True)
    pooled_only = Probed(model, backbone, moments=False)
    with_moments = min(len(images), MOMENT_IMAGES) if moments else 0
    engines = (
        Engine(measured, accel, with_moments, runtimes=_without("onnxruntime")),
        Engine(pooled_only, accel, len(images) - with_moments),
    )
    kept = 2 + len(backbone.stages)  # logits, head input, stages; then the layers' moments
    order = _spread_first(len(images), with_moments)
    pooled, sums, seconds = [], None, 0.0
    for start in range(0, len(images), batch_size):
        indices = order[start : start + batch_size]
        inputs = to_model_input(images.images[indices], backbone.preprocess, train=False)
        started = time.perf_counter()
        if start < with_moments:
            outputs = engines[0](inputs, pad_to=batch_size)
            # Summed as they come, on the device: a batch's moments, not each image's, in memory.
            batch_sums = [layer[: with_moments - start].float().sum(dim=0) for layer in outputs[kept:]]
            sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums, strict=True)]
        else:
            outputs = engines[1](inputs, pad_to=batch_size)
        seconds += time.perf_counter() - started
        pooled.append(outputs[:kept])
        if progress:
            progress(start + len(indices), len(images))
    logits, features, *stages = (_unordered(torch.cat(parts), order) for parts in zip(*pooled, strict=True))
    layers = (
        [model.get_submodule(name) for name in _reached(measured, images, backbone.preprocess, accel)]
        if sums
        else []
    )
    moments = [
        Moments.of(layer, total, with_moments) for layer, total in zip(layers, sums or [], strict=True)
    ]
    return Probe(
        candidate=candidate,
        features=features,
        stages=dict(zip(backbone.stages, stages, strict=True)),
        logits=logits,
        layer_shifts=[m.shift() for m in moments],
        layer_tails=[m.shift(TAIL) for m in moments],
        images_per_s=len(images) / max(seconds, 1e-9),
        runtime=engines[1].choice or engines[0].choice,
    )


def _reached(measured: Probed, images: ImageCache, preprocess: Preprocess, accel: Accelerator) -> list[str]:
    """The BatchNorm layers in the order the pass reached them, which pairs each with its
    moments. A runtime chosen on an earlier analysis runs the pass without torch, where the order
    is learnt: one image through torch tells it then."""
    if not measured.reached:
        with torch.inference_mode():
            one_image = to_model_input(images.images[:1], preprocess, train=False)
            measured(accel.to_device(one_image))
    return measured.reached


def _without(name: str) -> tuple[str, ...]:
    return tuple(runtime for runtime in configured_runtimes() if runtime != name)


def _spread_first(count: int, first: int) -> torch.Tensor:
    """An order of ``count`` images whose first ``first`` are spread evenly over all of them (the
    sample comes class by class: its first images would be one class's)."""
    spread = torch.linspace(0, count - 1, first).round().long().unique() if first else torch.zeros(0).long()
    rest = torch.ones(count, dtype=torch.bool)
    rest[spread] = False
    return torch.cat([spread, rest.nonzero().flatten()])


def _unordered(rows: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``rows`` (in ``order``) back in the images' own order, as float32 on the CPU."""
    result = torch.empty_like(rows, dtype=torch.float32, device="cpu")
    result[order] = rows.float().cpu()
    return result


class Probed(nn.Module):
    """A backbone whose forward returns, besides its ImageNet logits, the pooled input of its
    head, the pooled output of every stage and, with ``moments``, ``grid_moments`` of every
    BatchNorm layer's input (those with stored statistics, in the order the pass reaches them):
    all one function of the batch, so that an inference runtime can run it as well as torch."""

    def __init__(self, model: nn.Module, backbone: Backbone, *, moments: bool) -> None:
        super().__init__()
        self.model = model
        self.head, self.stages, self.layout = backbone.family.head, backbone.stages, backbone.family.layout
        self.batchnorms = [
            name
            for name, module in model.named_modules()
            if moments and isinstance(module, nn.BatchNorm2d) and module.running_mean is not None
        ]
        self.reached: list[str] = []  # the BatchNorm layers in the order the last pass reached them

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        captured: dict[str, torch.Tensor] = {}
        moments: dict[str, torch.Tensor] = {}
        handles = [
            self.model.get_submodule(self.head).register_forward_pre_hook(_keep_input(captured, "head"))
        ]
        handles += [
            self.model.get_submodule(stage).register_forward_hook(_keep_pooled(captured, stage, self.layout))
            for stage in self.stages
        ]
        handles += [
            self.model.get_submodule(name).register_forward_pre_hook(_keep_moments(moments, name))
            for name in self.batchnorms
        ]
        try:
            logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        self.reached = list(moments)
        return (logits.float(), captured["head"], *(captured[s] for s in self.stages), *moments.values())

    def extra_repr(self) -> str:
        return f"head={self.head!r}, stages={self.stages!r}, layout={self.layout!r}, moments={bool(self.batchnorms)}"


def _keep_input(into: dict[str, torch.Tensor], key: str) -> Callable:
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        into[key] = args[0].float().flatten(1)

    return hook


def _keep_pooled(into: dict[str, torch.Tensor], key: str, layout: str) -> Callable:
    """Average the stage's output over its positions (grid cells or tokens)."""
    dims = {"nchw": (2, 3), "nhwc": (1, 2), "tokens": (1,)}[layout]

    def hook(module: nn.Module, args: object, out: torch.Tensor) -> None:
        into[key] = out.float().mean(dim=dims)

    return hook


def _keep_moments(into: dict[str, torch.Tensor], key: str) -> Callable:
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        into.setdefault(key, grid_moments(args[0]))

    return hook
