"""Domain shift by depth, read off BatchNorm: how far the user's images move a pre-trained
network's activations from the ImageNet statistics each BatchNorm layer stored.

Every BatchNorm layer keeps the per-channel mean and variance of its input over ImageNet (its
running statistics). Over a sample of the user's images we accumulate the same moments (sums
over every image and position, not per-batch statistics, which are noisy at batch 32) and
compare the two per channel with the symmetric Kullback-Leibler divergence of two Gaussians.
Early layers see edges and colours, which most images share; a shift that grows with depth
means the higher-level features ImageNet taught do not describe these images.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

GRID = 16  # positions per side sampled from each feature map
DEPTH_PARTS = 4  # the profile is averaged per quarter of the network's BatchNorm layers


@dataclass
class Moments:
    """Running sums of one layer's input, per channel, in float64."""

    layer: nn.BatchNorm2d
    total: torch.Tensor
    squares: torch.Tensor
    count: int = 0

    def add(self, x: torch.Tensor) -> None:
        # A regular grid of at most GRID x GRID positions per image estimates the same moments
        # as every position (the early layers' 112 x 112 maps would cost more than the network).
        step = max(1, math.ceil(max(x.shape[2], x.shape[3]) / GRID))
        x = x.detach()[:, :, ::step, ::step].float()
        self.total += x.sum(dim=(0, 2, 3)).double().cpu()
        self.squares += x.square().sum(dim=(0, 2, 3)).double().cpu()
        self.count += x.shape[0] * x.shape[2] * x.shape[3]

    def shift(self) -> float:
        """The median over channels of the symmetric KL between the sample's Gaussian and the
        stored one (variances floored by the layer's own epsilon, as normalisation does)."""
        eps = self.layer.eps
        mean = self.total / self.count
        var = (self.squares / self.count - mean**2).clamp_min(0) + eps
        stored_mean = self.layer.running_mean.detach().double().cpu()
        stored_var = self.layer.running_var.detach().double().cpu().clamp_min(0) + eps
        gap = (mean - stored_mean) ** 2
        kl = 0.5 * (var / stored_var + stored_var / var - 2) + 0.5 * gap * (1 / var + 1 / stored_var)
        return float(kl.median())


@contextmanager
def batchnorm_moments(model: nn.Module) -> Iterator[dict[int, Moments]]:
    """Accumulate the input moments of every BatchNorm2d layer with stored statistics; the
    dict fills in the order the forward pass reaches the layers."""
    found: dict[int, Moments] = {}

    def hook(layer: nn.BatchNorm2d, args: tuple[torch.Tensor, ...]) -> None:
        if id(layer) not in found:
            zeros = torch.zeros(layer.num_features, dtype=torch.float64)
            found[id(layer)] = Moments(layer, zeros, zeros.clone())
        found[id(layer)].add(args[0])

    handles = [
        m.register_forward_pre_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None
    ]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def depth_profile(shifts: list[float], parts: int = DEPTH_PARTS) -> list[float]:
    """The mean layer shift in each of ``parts`` consecutive groups of layers, shallow to deep."""
    if len(shifts) < parts:
        return []
    bounds = [round(i * len(shifts) / parts) for i in range(parts + 1)]
    return [sum(shifts[a:b]) / (b - a) for a, b in itertools.pairwise(bounds)]
