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
from dataclasses import dataclass

import torch
from torch import nn

GRID = 16  # positions per side sampled from each feature map
DEPTH_PARTS = 4  # the profile is averaged per quarter of the network's BatchNorm layers


def grid_moments(x: torch.Tensor) -> torch.Tensor:
    """``[N, 2, C]``: each image's per-channel mean and mean square over a regular grid of at most
    GRID x GRID positions of the feature map ``x`` (``[N, C, H, W]``).

    The grid estimates the same moments as every position (the early layers' 112 x 112 maps would
    cost more than the network); per-image values let a pass be padded, split or run by an
    inference runtime and still add up to the same totals.
    """
    step = max(1, math.ceil(max(x.shape[2], x.shape[3]) / GRID))
    x = x.detach()[:, :, ::step, ::step].float()
    return torch.stack([x.mean(dim=(2, 3)), x.square().mean(dim=(2, 3))], dim=1)


@dataclass
class Moments:
    """The sums of one layer's per-image input moments over a sample, per channel, in float64."""

    layer: nn.BatchNorm2d
    total: torch.Tensor
    squares: torch.Tensor
    count: int = 0

    @classmethod
    def of(cls, layer: nn.BatchNorm2d, sums: torch.Tensor, images: int) -> Moments:
        """From the sum over ``images`` images of their ``grid_moments`` (``[2, C]``)."""
        sums = sums.double().cpu()
        return cls(layer, sums[0], sums[1], images)

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


def depth_profile(shifts: list[float], parts: int = DEPTH_PARTS) -> list[float]:
    """The mean layer shift in each of ``parts`` consecutive groups of layers, shallow to deep."""
    if len(shifts) < parts:
        return []
    bounds = [round(i * len(shifts) / parts) for i in range(parts + 1)]
    return [sum(shifts[a:b]) / (b - a) for a, b in itertools.pairwise(bounds)]
