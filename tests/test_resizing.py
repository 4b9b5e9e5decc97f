"""Progressive resizing: which size each epoch trains at, where the plan records it, and the
batches the fine-tuning cases train on."""

from __future__ import annotations

import pytest
import torch

from core.models.preprocess import Preprocess
from core.training.batches import ImageSource, ResizingSource
from core.training.device import accelerator
from core.training.loop import fresh_batch_norm_statistics
from core.training.plan import Plan, PlanError
from core.training.resizing import size_schedule
from pages._common import plan_summary


class Rule:
    """A backbone's size rule: the smallest size it takes, and the one size it needs if any."""

    def __init__(self, min_size: int = 32, exact: int | None = None) -> None:
        self.min_size, self.exact = min_size, exact

    def input_size_rule(self, case: int | None = None) -> tuple[int, int | None]:
        return self.min_size, self.exact


def schedule(rule: Rule | None = None, **fields: object) -> tuple[int, ...]:
    plan = Plan(**{"data": "x", "backbone": "b", "case": 3, "epochs": 10, "image_size": 224, **fields})
    return size_schedule(plan, rule or Rule()).sizes


def test_fine_tuning_trains_most_epochs_small_and_one_in_ten_at_the_full_size() -> None:
    assert schedule() == (128,) * 6 + (160,) * 3 + (224,)
    assert schedule(epochs=20) == (128,) * 12 + (160,) * 6 + (224,) * 2
    assert schedule(case=4, epochs=5) == (128, 128, 128, 160, 224)
    assert schedule(epochs=2) == (128, 224)


def test_one_epoch_trains_at_the_full_size() -> None:
    assert schedule(epochs=1) == (224,)


@pytest.mark.parametrize(
    "fields, rule",
    [
        ({"progressive_resizing": "off"}, None),  # turned off
        ({"case": 1}, None),  # a frozen body computes its features once, at the full size
        ({"case": 2}, None),
        ({}, Rule(exact=224)),  # a backbone that takes one size only
        ({}, Rule(min_size=224)),  # nothing smaller than the full size is allowed
    ],
)
def test_every_epoch_trains_at_one_size_when_resizing_is_off_or_cannot_apply(
    fields: dict, rule: Rule | None
) -> None:
    assert schedule(rule, **fields) == (224,) * 10


def test_the_plan_records_the_choice_and_older_plans_read_as_trained_at_one_size() -> None:
    assert Plan(case=3).to_dict()["progressive_resizing"] == "on"
    assert Plan.from_stored({"schema": 2, "case": 3}).progressive_resizing == "off"
    with pytest.raises(PlanError, match="progressive_resizing 'yes' is not one of: on, off"):
        Plan(progressive_resizing="yes")


def test_the_plan_line_names_each_epoch_s_size() -> None:
    plan = {
        "schema": 3,
        "data": "x",
        "backbone": "efficientnet_lite0",
        "case": 3,
        "epochs": 10,
        "image_size": 224,
    }
    assert "epochs 1-6 at 128 px, 7-9 at 160 px, 10 at 224 px" in plan_summary(plan)
    assert "· 224 px ·" in plan_summary({**plan, "progressive_resizing": "off"})


class Cache:
    """What ``ImageSource`` reads of an ``ImageCache``: the decoded squares and their labels."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.labels = images, torch.arange(len(images))

    def __len__(self) -> int:
        return len(self.images)


def test_training_batches_come_at_each_epoch_s_size_and_validation_s_at_the_full_size() -> None:
    images = torch.randint(0, 256, (6, 3, 73, 73), dtype=torch.uint8)
    train = ImageSource(
        Cache(images), Preprocess(73, 64), accelerator("cpu", "fp32"), train=True, augment="light"
    )
    plan = Plan(data="x", backbone="b", case=3, epochs=4, image_size=64)
    batches = ResizingSource(train, size_schedule(plan, Rule()))
    indices = torch.arange(4)
    sizes = [batches.load(indices, epoch)[0].shape[-1] for epoch in range(4)]
    assert sizes == [32, 32, 32, 64]
    assert train.centred().load(indices, epoch=0)[0].shape[-1] == 64
    small = train.resized(32).load(indices, epoch=0)[0]
    assert small.shape == (4, 3, 32, 32) and torch.isfinite(small).all()


def test_batch_norm_statistics_restart_at_a_new_size_and_frozen_layers_keep_theirs() -> None:
    trained, frozen = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    frozen.requires_grad_(False)
    for norm in (trained, frozen):
        norm.running_mean.fill_(5.0)
    batches = [torch.randn(4, 3, 8, 8) + shift for shift in (1.0, 3.0)]
    with fresh_batch_norm_statistics(torch.nn.ModuleList([trained, frozen])):
        trained.train()
        for batch in batches:
            trained(batch)
    expected = torch.stack([batch.mean(dim=(0, 2, 3)) for batch in batches]).mean(0)
    assert torch.allclose(trained.running_mean, expected, atol=1e-6)  # the old size's 5.0 is gone
    assert trained.momentum == 0.1
    assert torch.equal(frozen.running_mean, torch.full((3,), 5.0))
