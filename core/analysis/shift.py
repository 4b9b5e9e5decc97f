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
from dataclasses import dataclass, replace

import torch
from torch import nn

from core.analysis.record import ShiftReading

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

    def shift(self, quantile: float = 0.5) -> float:
        """The ``quantile`` over channels (the median by default) of the symmetric KL between the
        sample's Gaussian and the stored one (variances floored by the layer's own epsilon, as
        normalisation does)."""
        eps = self.layer.eps
        mean = self.total / self.count
        var = (self.squares / self.count - mean**2).clamp_min(0) + eps
        stored_mean = self.layer.running_mean.detach().double().cpu()
        stored_var = self.layer.running_var.detach().double().cpu().clamp_min(0) + eps
        gap = (mean - stored_mean) ** 2
        kl = 0.5 * (var / stored_var + stored_var / var - 2) + 0.5 * gap * (1 / var + 1 / stored_var)
        return float(kl.quantile(quantile))


def depth_profile(shifts: list[float], parts: int = DEPTH_PARTS) -> list[float]:
    """The mean layer shift in each of ``parts`` consecutive groups of layers, shallow to deep."""
    if len(shifts) < parts:
        return []
    bounds = [round(i * len(shifts) / parts) for i in range(parts + 1)]
    return [sum(shifts[a:b]) / (b - a) for a, b in itertools.pairwise(bounds)]


# The shift type reads the most shifted tenth of each layer's channels: grey-scaling a photo
# moves the colour-sensitive channels of the first layers hundreds of times further than a photo
# does and leaves the median channel where it was. Thresholds calibrated on generated data sets
# whose kind of shift is known (bench/shift_type.py; the table is in the design notes).
TAIL = 0.9
# From the fit sets: the first quarter's tail shift over the second's is 1.4 on photos and 2.8 or
# more on every changed look (geometric mean 2.0); log(deepest / first) is 0.45 on photos and 1.43
# on shuffled tiles (midpoint 0.9).
SPIKE_AT = 2.0
CONTENT_TREND = 0.9

SHIFT_WORDS = {
    "none": "your images look like ImageNet's: no low-level difference stands out and none grows with depth",
    "input": "your images differ from ImageNet's in their low-level look (colour, contrast, grey "
    "scale, texture), not in what they show",
    "content": "your images differ from ImageNet's in what they show: the difference grows with depth",
}


@dataclass(frozen=True)
class ShiftType:
    """What kind of shift a profile of tail shifts by depth shows: ``input`` (the first layers
    stand out, the look differs), ``content`` (growing with depth) or ``none``, and the numbers."""

    kind: str
    first: float  # mean tail shift of the first quarter of the BatchNorm layers
    second: float  # of the second quarter
    deepest: float  # of the deepest quarter

    @property
    def spike(self) -> float:
        """How far the first layers stand out from the next ones."""
        return self.first / max(self.second, 1e-9)

    @property
    def trend(self) -> float:
        """log(deepest / first): above zero the shift grows with depth."""
        return math.log(max(self.deepest, 1e-9) / max(self.first, 1e-9))

    @property
    def words(self) -> str:
        numbers = (
            f"shift {self.first:.2f} in the first layers, {self.spike:.1f}x the next ones, "
            f"{self.deepest:.2f} in the deepest"
        )
        return f"{SHIFT_WORDS[self.kind]} ({numbers})"

    def to_record(self) -> ShiftReading:
        return ShiftReading(
            kind=self.kind,
            first=round(self.first, 4),
            second=round(self.second, 4),
            deepest=round(self.deepest, 4),
            spike=round(self.spike, 3),
            trend=round(self.trend, 3),
            words=self.words,
            thresholds={"tail": TAIL, "spike_at": SPIKE_AT, "content_trend": CONTENT_TREND},
        )


def shift_type(tails: list[float]) -> ShiftType:
    """Read the kind of shift off a ``depth_profile`` of tail shifts (shallow to deep): content
    when it grows with depth past ``CONTENT_TREND``, else input-level when the first quarter
    stands out from the second by ``SPIKE_AT``, else none."""
    reading = ShiftType("none", tails[0], tails[1], tails[-1])
    if reading.trend > CONTENT_TREND:
        return replace(reading, kind="content")
    if reading.spike >= SPIKE_AT:
        return replace(reading, kind="input")
    return reading
