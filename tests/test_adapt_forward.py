"""Every torchvision classifier (and the extras) computes real numbers with its new head.

``test_adapt`` checks structure on the meta device; here each model's memory is made real and
a CPU forward pass runs at the smallest input its family accepts. Weights are drawn directly
(``to_empty`` + a plain normal fill) instead of through each builder's slow initialisers: the
point is that every operation of the adapted model runs, not what it predicts.
"""

from __future__ import annotations

import pytest
import torch
from helpers_models import input_for, on_meta

from core.models.backbones import names

# Its only input size is 518 px: one forward pass there costs about a TFLOP, minutes on 2 cores.
TOO_COSTLY_FOR_CPU = {"vit_h_14"}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def materialise(model: torch.nn.Module) -> torch.nn.Module:
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


@pytest.mark.parametrize("backbone", [b for b in names() if b not in TOO_COSTLY_FOR_CPU])
def test_every_classifier_runs_a_real_forward_pass_with_a_new_head(backbone: str) -> None:
    model = materialise(on_meta(backbone, 1, 3))
    with torch.no_grad():
        logits = model(input_for(backbone, 1, device="cpu"))
    assert logits.shape == (1, 3)
    assert torch.isfinite(logits).all()
