"""The backbone catalog: exactly torchvision's registry plus the extras, numbers from the weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torchvision

from core.cli import main
from core.models import backbones, catalog
from core.models.packaged import PACKAGED

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rows() -> dict[str, SimpleNamespace]:
    """The catalog's rows as the web server reads them, by name, with their fields as attributes."""
    return {card.name: SimpleNamespace(**card.summary()) for card in catalog.cards()}


def test_catalog_is_torchvision_registry_plus_extras(rows: dict) -> None:
    expected = set(torchvision.models.list_models(module=torchvision.models)) | set(PACKAGED)
    assert set(rows) == expected
    assert len(rows) == len(expected)  # no duplicates
    assert "efficientnet_lite0" in rows and rows["efficientnet_lite0"].offline


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "googlenet"])
def test_params_match_the_real_module(rows: dict, name: str) -> None:
    # Pre-trained GoogLeNet ships without its auxiliary heads, and its weights count that way.
    options = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, weights=None, **options)
    assert rows[name].params == sum(p.numel() for p in model.parameters())


def test_offline_extra_params_match_its_module(rows: dict) -> None:
    from core.models.adapt import build_model

    model = build_model(backbones.resolve("efficientnet_lite0"), case=4, num_classes=1000, weights="none")
    assert rows["efficientnet_lite0"].params == sum(p.numel() for p in model.parameters())


def test_input_sizes_come_from_the_weights_not_from_folklore(rows: dict) -> None:
    assert rows["inception_v3"].input_size == 299
    assert rows["googlenet"].input_size == 224  # some notes say 299: wrong
    assert rows["resnet50"].input_size == 224
    assert rows["vit_h_14"].input_size == 518
    assert rows["efficientnet_lite0"].min_size == 32  # any size from 32 px up, 224 by default


def test_families_and_years_are_filled_in(rows: dict) -> None:
    assert rows["resnext50_32x4d"].family == rows["resnet18"].family
    assert rows["vgg16"].year == 2014 and rows["convnext_tiny"].year == 2022
    assert all(row.year for row in rows.values())


def test_history_labels_each_source() -> None:
    history = catalog.history()
    competition = {r["model"]: r for r in history if not r["checkpoint"]}
    assert {r["source"] for r in competition.values()} == {"ILSVRC competition result"}
    assert {m: r["top5_error"] for m, r in competition.items()} == {
        "2011 winner (XRCE)": 26.0,
        "AlexNet": 15.3,
        "VGG": 7.3,
        "GoogLeNet": 6.7,
        "ResNet": 3.57,
    }
    assert [competition[m]["layers"] for m in ("AlexNet", "VGG", "GoogLeNet", "ResNet")] == [8, 19, 22, 152]
    alexnet_checkpoint = next(r for r in history if r["checkpoint"] and r["backbone"] == "alexnet")
    assert alexnet_checkpoint["source"] == "torchvision checkpoint (alexnet)"
    assert alexnet_checkpoint["top5_error"] == pytest.approx(20.93, abs=0.01)


def test_cli_json_is_valid_and_has_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert len(data) == len(backbones.names())
    inception = next(row for row in data if row["name"] == "inception_v3")
    assert {"name", "family", "params", "gflops", "top1", "top5", "input_size"} <= inception.keys()
    assert inception["input_size"] == 299


def test_cli_unknown_family_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "--family", "Nope"]) == 1
    assert "unknown family 'Nope'" in capsys.readouterr().err


def test_default_backbone_is_the_offline_one_until_weights_are_on_disk(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert catalog.default_card().name == "efficientnet_lite0"
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    checkpoint = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"stand-in")
    assert catalog.default_card().name == "resnet18"  # looked up live, not cached


def test_preprocess_comes_from_the_weights_transforms() -> None:
    pre = backbones.resolve("inception_v3").preprocess
    assert (pre.resize, pre.crop) == (342, 299)
    assert backbones.resolve("efficientnet_lite0").preprocess.crop == 224


# -- the record: resolved once, with per-stage facts --------------------------------------------

# The documented exceptions to "the default cut ends the last stage at stride 16" (core/families.py).
CUT_EXCEPTIONS = {"AlexNet", "SqueezeNet", "ViT"}


def test_a_name_resolves_once_into_one_record() -> None:
    assert backbones.resolve("resnet50") is backbones.resolve("resnet50")
    with pytest.raises(backbones.UnknownBackbone, match="unknown backbone 'resnet7'"):
        backbones.resolve("resnet7")


def test_stage_facts_describe_each_cut_for_people() -> None:
    facts = backbones.resolve("resnet50").stage_facts()
    assert [(f.index, f.path, f.channels, f.stride) for f in facts] == [
        (1, "layer1", 256, 4),
        (2, "layer2", 512, 8),
        (3, "layer3", 1024, 16),
        (4, "layer4", 2048, 32),
    ]
    kept = [f.params_kept for f in facts]
    assert kept == sorted(kept) and kept[-1] == 1.0  # everything but the head
    assert 0.25 < kept[2] < 0.4  # layer4 holds most of ResNet-50's weights
    swin = backbones.resolve("swin_t").stage_facts()  # channels last
    assert [(f.channels, f.stride) for f in swin] == [(96, 4), (192, 8), (384, 16), (768, 32)]
    vit = backbones.resolve("vit_b_32").stage_facts()  # tokens: no grid
    assert {(f.channels, f.stride) for f in vit} == {(768, None)}


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "googlenet", "inception_v3", "mobilenet_v2",
                                  "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
                                  "efficientnet_v2_s", "mnasnet0_5", "shufflenet_v2_x0_5", "densenet121",
                                  "regnet_x_400mf", "convnext_tiny", "swin_t", "maxvit_t",
                                  "efficientnet_lite0", "efficientnet_lite2"])  # fmt: skip
def test_the_default_cut_ends_the_last_stage_at_stride_16(name: str) -> None:
    backbone = backbones.resolve(name)
    assert backbone.family.name not in CUT_EXCEPTIONS
    facts = {f.path: f for f in backbone.stage_facts()}
    assert facts[backbone.default_cut].stride == 16
    assert max(f.index for f in facts.values() if f.stride == 16) == facts[backbone.default_cut].index


def test_the_surgery_plan_and_catalog_never_look_a_backbone_up_by_name() -> None:
    """Names are resolved at the edges (CLI, pages, plan, training set-up); the rest take records."""
    root = Path(__file__).resolve().parents[1] / "core"
    for module in ("models/adapt.py", "models/weights.py", "artifacts/export.py", "artifacts/predict.py"):
        assert "resolve(" not in (root / module).read_text(), module


def test_a_stage_is_labelled_in_words() -> None:
    facts = backbones.resolve("efficientnet_lite0").stage_facts()
    assert facts[4].label() == "stage 5 of 7 · 112 channels · 14×14 · keeps 21% of the network"
    assert (
        backbones.resolve("vit_b_32")
        .stage_facts()[0]
        .label()
        .startswith("stage 1 of 12 · 768 channels · tokens")
    )


def test_the_share_kept_counts_convolutions_that_hold_a_padding_module() -> None:
    """EfficientNet-Lite's convolutions pad with a module inside them: their weights count too."""
    kept = [f.params_kept for f in backbones.resolve("efficientnet_lite0").stage_facts()]
    assert kept == sorted(kept) and kept[-1] > 0.8


# -- the cards: what the web server reads, without torch ------------------------------------------


@pytest.mark.parametrize("name", ["resnet50", "inception_v3", "vit_b_32", "efficientnet_lite0"])
def test_a_card_read_from_the_catalog_says_what_its_record_says(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    record, card = backbones.resolve(name), catalog.card(name)
    assert card == record.card()
    assert card.stage_facts == record.stage_facts() and card.default_cut == record.default_cut
    assert [card.input_size_rule(case) for case in (None, 1, 2, 3, 4)] == [
        record.input_size_rule(case) for case in (None, 1, 2, 3, 4)
    ]
    assert card.weights_file() == record.weights.file  # found where torch's hub looks
    assert card.on_disk() == record.weights.on_disk()


def test_the_server_shows_backbones_and_checks_a_plan_without_loading_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from core.models import catalog\n"
        "from core.training.plan import Plan\n"
        "rows = [card.summary() for card in catalog.cards()]\n"
        f"plan = Plan(data={str(tmp_path)!r}, backbone='resnet50', case=2, weights='none').resolve()\n"
        "print(len(rows), plan.cut, plan.image_size, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(backbones.names())), "layer3", "224", "False"]


def test_a_catalog_that_cannot_be_written_names_the_command_and_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_HOME", str(tmp_path / "elsewhere"))  # no catalog there yet
    monkeypatch.setattr(catalog, "WRITE_COMMAND", ("backbones", "--write-no-such-thing"))
    with pytest.raises(catalog.CatalogUnavailable) as refused:
        catalog.cards()
    assert "`python -m core backbones --write-no-such-thing` exited with 2" in str(refused.value)
    assert "unrecognized arguments: --write-no-such-thing" in str(refused.value)
    assert not catalog.catalog_file().exists()


def test_storing_the_catalog_removes_the_catalogs_of_other_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_HOME", str(tmp_path / "home"))
    folder = catalog.catalog_file().parent
    folder.mkdir(parents=True)
    (folder / "catalog-0123456789abcdef.json").write_text("[]")  # left by an earlier version
    (folder / "catalog-0123456789abcdef.lock").write_text("")
    current = catalog.store([backbones.resolve("resnet18").card()])
    assert sorted(p.name for p in folder.iterdir()) == [current.name]
