"""Models built on the meta device, and inputs they accept, for the tests of model surgery: a
forward pass there runs every line of the model's own forward without computing numbers. One
model of every family, and a way to make a meta model real cheaply, for the tests that need
numbers."""

from __future__ import annotations

import torch
from torch import nn

from core.models.adapt import build_model
from core.models.backbones import on_meta as meta_device
from core.models.backbones import resolve

# The smallest model of every family.
REPRESENTATIVES = (
    "resnet18",
    "vgg11_bn",
    "alexnet",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "mnasnet0_5",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "densenet121",
    "regnet_x_400mf",
    "convnext_tiny",
    "vit_b_32",
    "swin_t",
    "maxvit_t",
    "efficientnet_lite0",
)


def on_meta(backbone: str, case: int, num_classes: int, cut: str | None = None) -> nn.Module:
    """``backbone`` adapted for ``case`` with ``num_classes`` outputs, on the meta device."""
    with meta_device():
        return build_model(resolve(backbone), case, num_classes, weights="none", cut=cut)


def input_for(backbone: str, case: int, batch: int = 1, device: str = "meta") -> torch.Tensor:
    """A random batch of the smallest images ``backbone`` takes in ``case`` (at least 32 px)."""
    min_size, exact = resolve(backbone).input_size_rule(case)
    size = exact or max(min_size, 32)
    return torch.randn(batch, 3, size, size, device=device)


def materialise(model: nn.Module) -> nn.Module:
    """A meta-device ``model`` made real on the CPU, in eval mode. Weights are drawn directly
    (``to_empty`` + a plain normal fill) instead of through each builder's slow initialisers:
    the point is that every operation runs, not what it predicts."""
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
        for name, buffer in model.named_buffers():
            # Unit variances keep BatchNorm finite; integer tables (relative-position indices)
            # become zeros, so every lookup stays in range.
            if name.endswith("running_var"):
                buffer.fill_(1.0)
            else:
                buffer.zero_()
    return model.eval()
