"""The plan: a JSON round trip, partial drafts, and refusals that name the bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.models.backbones import resolve
from core.training.plan import Plan, PlanError


def test_json_round_trip_gives_the_same_plan() -> None:
    plan = Plan(
        data="/data/cats.zip",
        backbone="resnet50",
        case=3,
        epochs=4,
        lr=3e-4,
        body_lr=1e-5,
        image_size=160,
        augment="strong",
        device="cuda:1",
        precision="bf16",
        patience=2,
    )
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_a_partial_draft_is_filled_with_defaults() -> None:
    plan = Plan.from_dict({"backbone": "resnet18", "case": 2})
    assert (plan.backbone, plan.case) == ("resnet18", 2)
    assert plan.epochs == Plan().epochs and plan.weights == "imagenet"


def test_json_integers_are_accepted_for_float_fields() -> None:
    assert Plan.from_dict({"lr": 1, "weight_decay": 0}).lr == 1.0


def test_unknown_keys_are_named_with_the_valid_fields() -> None:
    with pytest.raises(PlanError, match=r"unknown plan field\(s\) 'learning_rate'.*valid fields:.*\blr\b"):
        Plan.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("case", 5, r"case 5 is not one of: 1, 2, 3, 4"),
        ("optimizer", "lion", r"optimizer 'lion' is not one of: adamw, sgd, adam"),
        ("augment", "heavy", r"augment 'heavy' is not one of: none, light, strong"),
        ("device", "tpu", r"device 'tpu' is not one of: auto, cpu, cuda, mps, cuda:N"),
        ("precision", "fp8", r"precision 'fp8'"),
        ("epochs", 0, r"epochs must be at least 1, not 0"),
        ("batch_size", 1, r"batch_size must be at least 2"),
        ("lr", 0.0, r"lr must be greater than 0"),
        ("val_fraction", 1.0, r"val_fraction 1.0 must lie between 0 and 1"),
        ("epochs", "3", r"epochs must be int, not '3'"),
        ("seed", True, r"seed must be int, not True"),
    ],
)
def test_bad_values_are_refused_by_name(field: str, value: object, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        Plan.from_dict({field: value})


def test_a_cut_outside_case_2_is_refused() -> None:
    with pytest.raises(PlanError, match=r"cut 'layer3' applies to case 2"):
        Plan(case=1, cut="layer3")


def test_a_surgical_fine_tune_is_case_3_through_a_stage_of_the_backbone(data: str) -> None:
    with pytest.raises(PlanError, match=r"tune_through 'layer1' applies to case 3"):
        Plan(case=1, tune_through="layer1")
    with pytest.raises(
        PlanError, match=r"tune_through 'layer9' is not a stage of resnet18; choose one of: layer1"
    ):
        Plan(data=data, backbone="resnet18", weights="none", case=3, tune_through="layer9").resolve()
    plan = Plan(data=data, backbone="resnet18", weights="none", case=3, tune_through="layer1").resolve()
    assert Plan.from_stored(plan.to_dict()).tune_through == "layer1"


def test_case_3_trains_the_head_alone_first_as_fine_tune_does() -> None:
    assert Plan(case=3, epochs=5).head_only_epochs == 1
    assert Plan(case=3, epochs=1).head_only_epochs == 0
    assert Plan(case=3, epochs=5, freeze_epochs=0).head_only_epochs == 0
    assert Plan(case=4, epochs=5).head_only_epochs == 0
    with pytest.raises(PlanError, match=r"freeze_epochs 5 must be at least 0 and less than epochs \(5\)"):
        Plan(case=3, epochs=5, freeze_epochs=5)


def test_the_body_learns_slower_than_the_head_in_case_3_only() -> None:
    assert Plan(case=3, lr=1e-3).body_learning_rate == pytest.approx(1e-4)
    assert Plan(case=4, lr=1e-3).body_learning_rate == pytest.approx(1e-3)
    assert Plan(case=3, lr=1e-3, body_lr=5e-4).body_learning_rate == pytest.approx(5e-4)


# -- resolve: checks against the backbone's description ---------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> str:
    folder = tmp_path / "images"
    folder.mkdir()
    return str(folder)


def test_resolve_fills_the_backbone_size_and_default_cut(data: str) -> None:

    plan = Plan(data=data, backbone="efficientnet_lite0", case=2).resolve()
    assert plan.cut == resolve("efficientnet_lite0").default_cut
    assert plan.image_size == 224
    assert Plan(data=data, case=1, backbone="").resolve().backbone  # the catalog's default


def test_resolve_refuses_images_too_small_for_the_backbone(data: str) -> None:
    with pytest.raises(PlanError, match=r"inception_v3 needs image_size >= 75 px, not 64"):
        Plan(data=data, backbone="inception_v3", weights="none", image_size=64).resolve()
    # Fine-tuning keeps Inception's auxiliary head, which needs the full 299 px.
    with pytest.raises(PlanError, match=r"inception_v3 needs image_size >= 299 px, not 160"):
        Plan(data=data, backbone="inception_v3", case=3, weights="none", image_size=160).resolve()


def test_resolve_refuses_a_size_other_than_a_transformers_exact_one(data: str) -> None:
    with pytest.raises(PlanError, match=r"vit_b_16 needs image_size 224 exactly, not 160"):
        Plan(data=data, backbone="vit_b_16", weights="none", image_size=160).resolve()


def test_resolve_refuses_a_cut_that_is_not_a_stage(data: str) -> None:

    with pytest.raises(PlanError, match=r"cut 'layer9' is not a stage of resnet18; choose one of: ") as info:
        Plan(data=data, backbone="resnet18", weights="none", case=2, cut="layer9").resolve()
    assert resolve("resnet18").stages[0] in str(info.value)


def test_resolve_refuses_missing_data_and_missing_weights(data: str, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"the plan has no data"):
        Plan(backbone="efficientnet_lite0").resolve()
    with pytest.raises(PlanError, match=r"does not exist"):
        Plan(data=str(tmp_path / "nope.zip"), backbone="efficientnet_lite0").resolve()
    with pytest.raises(PlanError, match=r"neither 'imagenet', 'none' nor a state_dict file"):
        Plan(data=data, backbone="efficientnet_lite0", weights=str(tmp_path / "w.pt")).resolve()
