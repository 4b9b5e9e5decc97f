"""EfficientNet-Lite0, Lite1 and Lite2, the backbones that work offline: real ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import skimage.data
import torch
import torch.nn.functional as F
import torchvision
from torchvision.transforms import v2

from core.models.adapt import build_model, split_frozen
from core.models.backbones import resolve
from core.models.packaged import PACKAGED

NAME = "efficientnet_lite0"
LITE0 = resolve(NAME)
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def normalise(images: torch.Tensor, name: str = NAME) -> torch.Tensor:
    pre = resolve(name).preprocess
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (images - mean) / std


@pytest.mark.parametrize(
    ("name", "resize", "crop"),
    [(NAME, 256, 224), ("efficientnet_lite1", 272, 240), ("efficientnet_lite2", 292, 260)],
)
def test_each_is_catalogued_with_the_numbers_of_its_module_and_file(
    name: str, resize: int, crop: int
) -> None:
    backbone = resolve(name)
    row = backbone.card().summary()
    model = backbone.architecture(random_init=True)
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["offline"] and row["on_disk"] and row["family"] == "EfficientNet-Lite"
    assert row["file_size_mb"] == round(backbone.weights.file.stat().st_size / 2**20, 2)
    assert (backbone.preprocess.resize, backbone.preprocess.crop) == (resize, crop)
    assert backbone.preprocess.mean == pytest.approx(
        (127 / 255,) * 3
    )  # TensorFlow's edge-model normalisation
    assert 0.3 < row["gflops"] < 1.0  # multiply-adds at its own input size


def test_lite0_s_gflops_and_stages_are_the_published_ones() -> None:
    assert LITE0.card().summary()["gflops"] == pytest.approx(
        0.385, abs=0.001
    )  # the TensorFlow README's 407M counts more
    assert LITE0.stages == (
        "_blocks.0",
        "_blocks.2",
        "_blocks.4",
        "_blocks.7",
        "_blocks.10",
        "_blocks.14",
        "_blocks.15",
    )
    assert LITE0.default_cut == "_blocks.10"  # stage 5 of 7, at stride 16
    assert resolve("efficientnet_lite2").default_cut == "_blocks.14"  # deeper variants: the same stage


def test_adding_a_variant_is_one_row() -> None:
    assert all(name.startswith("efficientnet_lite") for name in PACKAGED)
    requirements = (Path(__file__).resolve().parents[1] / "requirements.txt").read_text()
    assert all(row.weights_package in requirements for row in PACKAGED.values())


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_weights_load_strictly_and_see_a_cat_in_a_photo_of_a_cat(name: str) -> None:
    backbone = resolve(name)
    model = backbone.architecture(random_init=True).eval()
    model.load_state_dict(backbone.weights.state_dict(), strict=True)
    pre = backbone.preprocess
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(pre.resize, antialias=True),
            v2.CenterCrop(pre.crop),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    image = normalise(transform(skimage.data.chelsea())[None], name)
    with torch.no_grad():
        probabilities = model(image).softmax(1)[0]
    categories = torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"]
    assert categories[int(probabilities.argmax())] in CATS
    assert sum(probabilities[categories.index(c)] for c in CATS) > 0.5


def test_case_4_from_scratch_differs_from_the_pretrained_weights() -> None:
    state = LITE0.weights.state_dict()
    pretrained = build_model(LITE0, 4, 2)
    scratch = build_model(LITE0, 4, 2, weights="none")
    assert torch.equal(pretrained._conv_stem.weight, state["_conv_stem.weight"])
    assert not torch.equal(scratch._conv_stem.weight, state["_conv_stem.weight"])


def test_case_1_tells_faces_from_non_faces_where_random_weights_cannot() -> None:
    """scikit-image's lfw_subset: 100 faces, then 100 non-faces, 25x25 grey."""
    faces = torch.from_numpy(skimage.data.lfw_subset()).float()[:, None].expand(-1, 3, -1, -1)
    images = normalise(F.interpolate(faces, size=(96, 96), mode="bilinear", align_corners=False))
    labels = torch.tensor([1] * 100 + [0] * 100)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    train, val = order[:140], order[140:]
    accuracy = {w: _case_1_accuracy(w, images, labels, train, val) for w in ("imagenet", "none")}
    assert accuracy["imagenet"] >= 0.9
    assert accuracy["imagenet"] >= accuracy["none"] + 0.15


def _case_1_accuracy(
    weights: str, images: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, val: torch.Tensor
) -> float:
    """Features once from the frozen body, then the new head trained on them, as the trainer does."""
    torch.manual_seed(0)
    body, head = split_frozen(build_model(LITE0, 1, 2, weights=weights))
    with torch.no_grad():
        features = body.eval()(images)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(head(features[train]), labels[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (head(features[val]).argmax(1) == labels[val]).float().mean().item()
