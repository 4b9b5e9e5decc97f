"""The epoch-time estimate: it times full batches of the plan's own data, whatever is left over."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from core.models import adapt
from core.training import estimate as estimate_module
from core.training import setup
from core.training.estimate import time_plan_here
from core.training.loop import Optimisation
from core.training.plan import Plan

BATCH_SIZE = 4
PLAN = {"backbone": "efficientnet_lite0", "image_size": 32, "batch_size": BATCH_SIZE, "augment": "none"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def one_batch_and_one_image(tmp_path: Path) -> Path:
    """``train/`` holds a batch and one image more; ``val/`` a few."""
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", BATCH_SIZE + 1), ("val", 4)):
        for i in range(count):
            folder = tmp_path / split / ("cats", "dogs")[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (24, 24, 3), dtype=torch.uint8, generator=generator)
            Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return tmp_path


def test_training_steps_are_timed_on_full_batches(
    one_batch_and_one_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step, sizes = Optimisation.step, []

    def counting_step(self: Optimisation, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        sizes.append(len(labels))
        return real_step(self, inputs, labels)

    monkeypatch.setattr(Optimisation, "step", counting_step)
    result = time_plan_here(Plan.from_dict({**PLAN, "data": str(one_batch_and_one_image), "case": 3}))
    assert sizes and set(sizes) == {BATCH_SIZE}
    assert (result.train_images, result.val_images) == (BATCH_SIZE + 1, 4)
    assert result.epoch_s > 0


def test_frozen_bodies_are_timed_on_full_batches(
    one_batch_and_one_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_split, sizes = adapt.split_frozen, []

    def counting_split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
        body, head = real_split(model)
        body.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
        return body, head

    monkeypatch.setattr(setup, "split_frozen", counting_split)
    monkeypatch.setattr(
        estimate_module, "export_model", lambda *args: time.sleep(0.01)
    )  # the spy would not export
    result = time_plan_here(Plan.from_dict({**PLAN, "data": str(one_batch_and_one_image), "case": 1}))
    assert sizes and set(sizes) == {BATCH_SIZE}
    assert result.prepare_s > 0 and 0 < result.epoch_s < result.prepare_s  # the head fits in no time
    assert result.export_s > 0 and result.total_s > result.first_epoch_s


def test_the_estimate_as_json_has_the_first_epoch_too(one_batch_and_one_image: Path) -> None:
    data = time_plan_here(Plan.from_dict({**PLAN, "data": str(one_batch_and_one_image), "case": 1})).to_dict()
    assert {"prepare_s", "epoch_s", "export_s", "first_epoch_s", "total_s"} <= set(data)
    assert data["first_epoch_s"] == data["prepare_s"] + data["epoch_s"]
    assert data["total_s"] == pytest.approx(
        data["prepare_s"] + data["epochs"] * data["epoch_s"] + data["export_s"]
    )
