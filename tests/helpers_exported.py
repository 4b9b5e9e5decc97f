"""A tiny exported model whose answers are known: it names an image's dominant colour."""

from __future__ import annotations

import torch
from torch import nn

from core.models.preprocess import Preprocess

PRE = Preprocess(resize=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
LABELS = ["red", "green", "blue"]


def colour_net() -> nn.Module:
    """Answers with the image's dominant channel: logits are the mean of each channel, times 4."""
    linear = nn.Linear(3, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(3) * 4)
        linear.bias.zero_()
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()
