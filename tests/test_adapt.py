"""Model surgery: every torchvision classifier gets a new head; one model of every family goes
through each of the four cases.

Shapes, parameter counts and structure are checked on the meta device, where a forward pass runs
every line of the model's own forward without computing numbers; what depends on numbers
(BatchNorm statistics, body + head == model, state_dict round trip, export) runs on real tensors.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from helpers_models import REPRESENTATIVES, input_for, on_meta
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from core.advice.cases import CASE_NUMBERS
from core.models import adapt
from core.models.adapt import FrozenBatchNorm2d, Truncated, build_model, split_frozen
from core.models.backbones import Backbone, names, resolve, torchvision_names
from core.models.families import FAMILIES
from core.models.packaged import PACKAGED

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def numel(parameters: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in parameters)


def trainable(model: nn.Module) -> int:
    return numel(p for p in model.parameters() if p.requires_grad)


def stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}


# -- every classifier ----------------------------------------------------------------------------


def test_registry_and_representatives_cover_every_family() -> None:
    assert set(names()) == set(torchvision_names()) | set(PACKAGED)
    assert {resolve(b).family.name for b in REPRESENTATIVES} == {f.name for f in FAMILIES}


@pytest.mark.parametrize("backbone", torchvision_names())
def test_every_classifier_gets_a_new_head_and_its_stages_run_in_order(backbone: str) -> None:
    record = resolve(backbone)
    model = on_meta(backbone, 1, 3).eval()
    order = []
    for stage in record.stages:
        model.get_submodule(stage).register_forward_hook(lambda *_, stage=stage: order.append(stage))
    assert model(input_for(backbone, 1)).shape == (1, 3)
    assert order == list(record.stages)
    assert trainable(model) == numel(model.get_submodule(record.family.head).parameters()) > 0


# -- one model per family, each case: structure (meta) -------------------------------------------


@pytest.mark.parametrize("case", CASE_NUMBERS)
@pytest.mark.parametrize("backbone", REPRESENTATIVES)
def test_case_output_shape_and_exact_trainable_parameters(backbone: str, case: int) -> None:
    record = resolve(backbone)
    for num_classes, cut in ((2, record.stages[0]), (5, None)):  # case 2: first and default cut
        model = on_meta(backbone, case, num_classes, cut=cut if case == 2 else None)
        assert model.eval()(input_for(backbone, case)).shape == (1, num_classes)
        head = model.fc if case == 2 else model.get_submodule(record.family.head)
        head_numel = numel(head.parameters())
        assert head_numel == (head.weight.shape[1] + (head.bias is not None)) * num_classes
        if case in (1, 2):
            assert trainable(model) == head_numel  # only the new layer
        else:
            assert trainable(model) == numel(model.parameters())
        if case == 2:
            assert_nothing_past_the_cut(model, record, cut or record.default_cut)


def assert_nothing_past_the_cut(model: nn.Module, record: Backbone, cut: str) -> None:
    present = {name for name, _ in model.trunk.named_modules()}
    later = record.stages[record.stages.index(cut) + 1 :]
    assert cut in present and record.family.head not in present
    assert not [stage for stage in later if stage in present]
    assert model.surgery.cut == cut


@pytest.mark.parametrize("backbone", ["googlenet", "inception_v3"])
def test_aux_heads_are_replaced_in_cases_3_and_4_and_gone_in_1_and_2(backbone: str) -> None:
    record = resolve(backbone)
    weight = {"googlenet": 0.3, "inception_v3": 0.4}[backbone]
    for case in CASE_NUMBERS:
        model = on_meta(backbone, case, 5).train()
        output = model(input_for(backbone, case, batch=2))
        if case in (3, 4):
            logits, *aux = output
            assert logits.shape == (2, 5) and [a.shape for a in aux] == [(2, 5)] * len(
                record.family.aux.layers
            )
            assert adapt.aux_weight(model) == weight
        else:
            assert isinstance(output, torch.Tensor) and output.shape == (2, 5)
            assert adapt.aux_weight(model) == 0.0
            assert not any(
                name.split(".")[0] in record.family.aux.modules for name, _ in model.named_modules()
            )
        assert model.eval()(input_for(backbone, case, batch=2)).shape == (2, 5)  # eval: a tensor


@pytest.mark.parametrize("backbone", ["resnet18", "googlenet", "efficientnet_lite0"])
def test_param_groups_give_new_layers_the_head_rate(backbone: str) -> None:
    record = resolve(backbone)
    for case in CASE_NUMBERS:
        model = on_meta(backbone, case, 4)
        model.requires_grad_(False)  # a trainer's warm-up does not change what is trainable
        groups = {g["name"]: g for g in adapt.param_groups(model, head_lr=1e-2, body_lr=1e-4)}
        new_layers = (
            ["fc"]
            if case == 2
            else [record.family.head, *(record.family.aux.layers if record.family.aux and case > 2 else [])]
        )
        new = [p for path in new_layers for p in model.get_submodule(path).parameters()]
        assert groups["head"]["lr"] == 1e-2 and {id(p) for p in groups["head"]["params"]} == {
            id(p) for p in new
        }
        if case in (1, 2):
            assert set(groups) == {"head"}
        else:
            assert groups["body"]["lr"] == 1e-4
            assert numel(groups["head"]["params"]) + numel(groups["body"]["params"]) == numel(
                model.parameters()
            )


def test_input_size_rules() -> None:
    assert resolve("resnet50").input_size_rule() == (1, None)
    assert resolve("vit_h_14").input_size_rule() == (518, 518)
    assert resolve("swin_v2_t").input_size_rule() == (256, 256)
    assert resolve("inception_v3").input_size_rule(case=1) == (75, None)
    assert resolve("inception_v3").input_size_rule() == (299, None)  # its aux head needs 299 px
    assert resolve("efficientnet_lite0").input_size_rule() == (32, None)
    assert on_meta("vit_h_14", 4, 2).image_size == 518  # built as its weights expect
    assert resolve("resnet50").stages == ("layer1", "layer2", "layer3", "layer4")
    assert resolve("resnet50").default_cut == "layer3"


@pytest.mark.parametrize("backbone", ["googlenet", "vit_b_32", "efficientnet_lite0"])
def test_case_2_computes_what_the_stage_computes_in_the_full_model(backbone: str, tmp_path: Path) -> None:
    """Same weights (passed as a state_dict file), same input: the truncated model's features
    are the cut stage's output inside the whole network, transform_input and all."""
    torch.manual_seed(0)
    full = build_model(resolve(backbone), 4, 3, weights="none").eval()
    if resolve(backbone).family.transform_input:
        assert full.transform_input  # as with the ImageNet weights, so that the trunk must apply it too
    torch.save(full.state_dict(), tmp_path / "weights.pt")
    truncated = build_model(resolve(backbone), 2, 3, weights=str(tmp_path / "weights.pt")).eval()
    captured = []
    full.get_submodule(resolve(backbone).default_cut).register_forward_hook(
        lambda *args: captured.append(args[2])
    )
    x = input_for(backbone, 4, device="cpu")
    with torch.no_grad():
        full(x)
        torch.testing.assert_close(truncated.trunk(x), captured[0], rtol=0, atol=0)


# -- one model per family, cases 1 and 2: numbers (CPU) -------------------------------------------


@pytest.mark.parametrize("case", (1, 2))
@pytest.mark.parametrize("backbone", REPRESENTATIVES)
def test_frozen_body_statistics_split_and_round_trip(backbone: str, case: int) -> None:
    torch.manual_seed(0)
    model = build_model(resolve(backbone), case, 3, weights="none")
    x = input_for(backbone, case, device="cpu")  # one image: every BatchNorm here is frozen

    model.train()  # no trainer helps: the frozen BatchNorm layers must refuse by themselves
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert all(type(m) is FrozenBatchNorm2d and not m.training for m in norms)
    before = stats(model)
    with torch.no_grad():
        model(x)
    after = stats(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    model.eval()
    with torch.no_grad():
        expected = model(x)
        body, head = split_frozen(model)
        assert torch.equal(head(body(x)), expected)
    assert all(not p.requires_grad for p in body.parameters())
    assert {id(p) for p in head.parameters()} == {id(p) for p in model.parameters() if p.requires_grad}

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = on_meta(backbone, case, 3)
    clone.load_state_dict(torch.load(buffer, weights_only=True), assign=True)
    clone.train()
    assert all(not m.training for m in clone.modules() if isinstance(m, _BatchNorm))
    with torch.no_grad():
        assert torch.equal(clone.eval()(x), expected)


def test_a_surgical_fine_tune_trains_the_first_stages_and_the_new_layer_only() -> None:
    torch.manual_seed(0)
    model = build_model(resolve("resnet18"), 3, 3, weights="none", tune_through="layer1").train()
    later = stats(model.layer4)

    model(torch.randn(4, 3, 32, 32)).sum().backward()

    learning = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert learning == {"conv1", "bn1", "layer1", "fc"}
    groups = {g["name"]: g["params"] for g in adapt.param_groups(model, head_lr=1e-2, body_lr=1e-3)}
    assert numel(groups["body"]) == numel(model.conv1.parameters()) + numel(model.bn1.parameters()) + numel(
        model.layer1.parameters()
    )
    assert all(type(m) is FrozenBatchNorm2d for m in model.layer4.modules() if isinstance(m, _BatchNorm))
    assert model.bn1.training and all(torch.equal(later[k], v) for k, v in stats(model.layer4).items())
    assert model.surgery.tune_through == "layer1"


# -- export --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("backbone", "case"), [("efficientnet_lite0", 2), ("resnet18", 1), ("googlenet", 3)])
def test_models_export_with_a_dynamic_batch(backbone: str, case: int) -> None:
    """As the trainer exports: frozen cases as body + head, trained ones whole, in eval mode."""
    torch.manual_seed(0)
    model = build_model(resolve(backbone), case, 3, weights="none")
    if case in (1, 2):
        model = nn.Sequential(*split_frozen(model))
    model.eval()
    example = input_for(backbone, case, batch=2, device="cpu")
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    x = input_for(backbone, case, batch=3, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))


# -- refusals ------------------------------------------------------------------------------------


def test_bad_arguments_name_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'; choose one of: alexnet"):
        build_model(resolve("resnet7"), 1, 3)
    with pytest.raises(ValueError, match="unknown case 5; choose one of: 1, 2, 3, 4"):
        build_model(resolve("resnet18"), 5, 3, weights="none")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2, not 1"):
        build_model(resolve("resnet18"), 1, 1, weights="none")
    with pytest.raises(
        ValueError, match="cut 'layer9' is not a stage of resnet18; choose one of: layer1, layer2"
    ):
        build_model(resolve("resnet18"), 2, 3, weights="none", cut="layer9")
    with pytest.raises(ValueError, match="cut 'layer2' applies to case 2"):
        build_model(resolve("resnet18"), 3, 3, weights="none", cut="layer2")
    with pytest.raises(ValueError, match="tune_through 'layer2' applies to case 3"):
        build_model(resolve("resnet18"), 4, 3, weights="none", tune_through="layer2")
    with pytest.raises(ValueError, match="split_frozen is for cases 1 and 2"):
        split_frozen(on_meta("resnet18", 3, 3))
    with pytest.raises(TypeError, match="not built by core.models.adapt.build_model"):
        adapt.param_groups(nn.Linear(2, 2), 1.0, 1.0)
    assert isinstance(on_meta("resnet18", 2, 3), Truncated)
