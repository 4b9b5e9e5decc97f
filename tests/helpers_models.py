"""Models built on the meta device, and inputs they accept, for the tests of model surgery: a
forward pass there runs every line of the model's own forward without computing numbers."""

from __future__ import annotations

import torch
from torch import nn

from core.models.adapt import build_model
from core.models.backbones import on_meta as meta_device
from core.models.backbones import resolve


def on_meta(backbone: str, case: int, num_classes: int, cut: str | None = None) -> nn.Module:
    """``backbone`` adapted for ``case`` with ``num_classes`` outputs, on the meta device."""
    with meta_device():
        return build_model(resolve(backbone), case, num_classes, weights="none", cut=cut)


def input_for(backbone: str, case: int, batch: int = 1, device: str = "meta") -> torch.Tensor:
    """A random batch of the smallest images ``backbone`` takes in ``case`` (at least 32 px)."""
    min_size, exact = resolve(backbone).input_size_rule(case)
    size = exact or max(min_size, 32)
    return torch.randn(batch, 3, size, size, device=device)
