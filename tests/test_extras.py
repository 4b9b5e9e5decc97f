"""EfficientNet-Lite0, the backbone that works offline: its weights are real ImageNet weights."""

from __future__ import annotations

import pytest
import skimage.data
import torch
import torch.nn.functional as F
import torchvision
from torchvision.transforms import v2

from core.adapt import build_model, split_frozen
from core.extras import EXTRA_BACKBONES
from core.families import family_of
from core.weights import imagenet_state_dict

NAME = "efficientnet_lite0"
EXTRA = EXTRA_BACKBONES[NAME]
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(EXTRA.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(EXTRA.preprocess.std).view(1, 3, 1, 1)
    return (images - mean) / std


def test_registered_with_the_numbers_of_its_module_and_file() -> None:
    model = EXTRA.build()
    assert EXTRA.params == sum(p.numel() for p in model.parameters())
    assert EXTRA.weights_available()
    assert EXTRA.file_size_mb == round(EXTRA.weights_file().stat().st_size / 2**20, 2)
    assert family_of(NAME).name == EXTRA.family == "EfficientNet-Lite"
    assert (EXTRA.preprocess.resize, EXTRA.preprocess.crop) == (256, 224)
    assert EXTRA.preprocess.mean == pytest.approx((127 / 255,) * 3)  # TensorFlow's edge-model normalisation


def test_weights_load_strictly_and_see_a_cat_in_a_photo_of_a_cat() -> None:
    model = EXTRA.build().eval()
    model.load_state_dict(imagenet_state_dict(NAME), strict=True)
    pre = EXTRA.preprocess
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(pre.resize, antialias=True),
            v2.CenterCrop(pre.crop),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    image = normalise(transform(skimage.data.chelsea())[None])
    with torch.no_grad():
        probabilities = model(image).softmax(1)[0]
    categories = torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"]
    assert categories[int(probabilities.argmax())] in CATS
    assert sum(probabilities[categories.index(c)] for c in CATS) > 0.5


def test_case_4_from_scratch_differs_from_the_pretrained_weights() -> None:
    state = imagenet_state_dict(NAME)
    pretrained = build_model(NAME, 4, 2)
    scratch = build_model(NAME, 4, 2, weights="none")
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
    body, head = split_frozen(build_model(NAME, 1, 2, weights=weights))
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
