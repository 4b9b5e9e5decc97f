"""Every torchvision classifier (and the extras) computes real numbers with its new head.

``test_adapt`` checks structure on the meta device; here each model's memory is made real and
a CPU forward pass runs at the smallest input its family accepts, with weights drawn directly
(``helpers_models.materialise``).
"""

from __future__ import annotations

import pytest
import torch
from helpers_models import input_for, materialise, on_meta

from core.models.backbones import names

# Its only input size is 518 px: one forward pass there costs about a TFLOP, minutes on 2 cores.
TOO_COSTLY_FOR_CPU = {"vit_h_14"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("backbone", [b for b in names() if b not in TOO_COSTLY_FOR_CPU])
def test_every_classifier_runs_a_real_forward_pass_with_a_new_head(backbone: str) -> None:
    model = materialise(on_meta(backbone, 1, 3))
    with torch.no_grad():
        logits = model(input_for(backbone, 1, device="cpu"))
    assert logits.shape == (1, 3)
    assert torch.isfinite(logits).all()
