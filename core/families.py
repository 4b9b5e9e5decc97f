"""Every supported architecture described once, as data: where its head is, where it may be cut.

The four cases (``core.adapt``) are generic operations on these descriptions, so supporting a
new family means adding a row here, not a branch there. Submodules are named by dotted path
(``"layer3"``, ``"features.7"``, ``"classifier.6"``), never by position among children.

**Default cut (case 2).** For convolutional nets it is the end of the last stage at stride 16,
the mid-level "conv4" features (ResNet's ``layer3``, VGG's fourth pooling, ...): general enough
to transfer to a different domain, far enough from the ImageNet-specific top. Exceptions: AlexNet
(its stride-16 stage is its last three convolutions; the cut keeps the first of them),
SqueezeNet (likewise; the cut is after fire5, at stride 8), and ViT (no strides; half its
encoder layers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from core.errors import TransferLabError
from core.extras import EXTRA_BACKBONES


class UnknownBackbone(TransferLabError, ValueError):
    """A backbone name that is neither a torchvision classifier nor a registered extra."""


LAYOUTS = ("nchw", "nhwc", "tokens")


@dataclass(frozen=True)
class AuxHeads:
    """GoogLeNet's and Inception v3's auxiliary classifiers."""

    modules: tuple[str, ...]  # removed when the aux heads are disabled (cases 1 and 2)
    layers: tuple[str, ...]  # their final linear layers, replaced when they are kept (cases 3, 4)
    weight: float  # their loss weight in the papers: 0.3 GoogLeNet, 0.4 Inception v3
    min_size: int = 1  # smallest input they accept (Inception v3's 5x5 conv needs 299 px)


@dataclass(frozen=True)
class Family:
    """One architecture family, resolved for one backbone by ``family_of``."""

    name: str  # display name, e.g. "ResNet"
    head: str  # dotted path of the final classification layer
    stages: tuple[str, ...]  # ordered dotted module names; case 2 may cut after any of them
    default_cut: str  # a member of stages
    pattern: str = ""  # regular expression over registry names that this description covers
    # How a stage's output is laid out, for case 2's global average pooling: nchw, nhwc (Swin),
    # or tokens (ViT's [batch, tokens, width], averaged over every token, class token included).
    layout: str = "nchw"
    exact_size: bool = False  # position embeddings or windows fix the input size at build time
    transform_input: bool = False  # the weights expect torchvision's transform_input=True
    size_kwarg: str | None = None  # builder argument that must match the weights' input size
    aux: AuxHeads | None = None
    # (body, head) modules with forward == flatten(head(body(x))), for a head that is not the
    # model's last operation (SqueezeNet: a 1x1 conv followed by ReLU and pooling).
    split: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.default_cut not in self.stages:
            raise ValueError(f"{self.name}: default cut {self.default_cut!r} is not one of its stages")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout {self.layout!r}; choose one of: {', '.join(LAYOUTS)}")


def _numbered(template: str, indices: range) -> tuple[str, ...]:
    return tuple(template.format(i) for i in indices)


def _vgg(pattern: str, pools: tuple[int, ...]) -> Family:
    """VGG's stages end at its max-pooling layers, whose indices depend on depth and BatchNorm."""
    stages = tuple(f"features.{i}" for i in pools)
    return Family("VGG", "classifier.6", stages, stages[3], pattern)


def _vit(pattern: str, depth: int) -> Family:
    stages = _numbered("encoder.layers.encoder_layer_{}", range(depth))
    return Family(
        "ViT",
        "heads.head",
        stages,
        stages[depth // 2 - 1],
        pattern,
        layout="tokens",
        exact_size=True,
        size_kwarg="image_size",
    )


_MOBILENET_V3_LARGE = ("features.1", "features.3", "features.6", "features.12", "features.15", "features.16")
_MOBILENET_V3_SMALL = ("features.1", "features.3", "features.8", "features.11", "features.12")

FAMILIES: tuple[Family, ...] = (
    Family(
        "ResNet",
        "fc",
        ("layer1", "layer2", "layer3", "layer4"),
        "layer3",
        r"resnet\d+|resnext\w+|wide_resnet\w+",
    ),
    _vgg("vgg11", (2, 5, 10, 15, 20)),
    _vgg("vgg11_bn", (3, 7, 14, 21, 28)),
    _vgg("vgg13", (4, 9, 14, 19, 24)),
    _vgg("vgg13_bn", (6, 13, 20, 27, 34)),
    _vgg("vgg16", (4, 9, 16, 23, 30)),
    _vgg("vgg16_bn", (6, 13, 23, 33, 43)),
    _vgg("vgg19", (4, 9, 18, 27, 36)),
    _vgg("vgg19_bn", (6, 13, 26, 39, 52)),
    Family(
        "AlexNet",
        "classifier.6",
        ("features.2", "features.5", "features.7", "features.9", "features.12"),
        "features.7",
        "alexnet",
    ),
    Family(
        "GoogLeNet",
        "fc",
        (
            "inception3a",
            "inception3b",
            "inception4a",
            "inception4b",
            "inception4c",
            "inception4d",
            "inception4e",
            "inception5a",
            "inception5b",
        ),
        "inception4e",
        "googlenet",
        transform_input=True,
        aux=AuxHeads(("aux1", "aux2"), ("aux1.fc2", "aux2.fc2"), 0.3),
    ),
    Family(
        "Inception v3",
        "fc",
        (
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
        ),
        "Mixed_6e",
        "inception_v3",
        transform_input=True,
        aux=AuxHeads(("AuxLogits",), ("AuxLogits.fc",), 0.4, min_size=299),
    ),
    Family(
        "MobileNet v2",
        "classifier.1",
        ("features.1", "features.3", "features.6", "features.13", "features.17", "features.18"),
        "features.13",
        "mobilenet_v2",
    ),
    Family("MobileNet v3", "classifier.3", _MOBILENET_V3_LARGE, "features.12", "mobilenet_v3_large"),
    Family("MobileNet v3", "classifier.3", _MOBILENET_V3_SMALL, "features.8", "mobilenet_v3_small"),
    Family(
        "EfficientNet",
        "classifier.1",
        _numbered("features.{}", range(1, 9)),
        "features.5",
        r"efficientnet_b\d",
    ),
    Family(
        "EfficientNet v2",
        "classifier.1",
        _numbered("features.{}", range(1, 8)),
        "features.5",
        "efficientnet_v2_s",
    ),
    Family(
        "EfficientNet v2",
        "classifier.1",
        _numbered("features.{}", range(1, 9)),
        "features.5",
        "efficientnet_v2_[ml]",
    ),
    Family(
        "MNASNet",
        "classifier.1",
        ("layers.8", "layers.9", "layers.10", "layers.11", "layers.12", "layers.13", "layers.16"),
        "layers.11",
        r"mnasnet\d_\d+",
    ),
    Family(
        "ShuffleNet v2",
        "fc",
        ("stage2", "stage3", "stage4", "conv5"),
        "stage3",
        r"shufflenet_v2_x\d_\d",
    ),
    Family(
        "SqueezeNet",
        "classifier.1",
        _numbered("features.{}", range(2, 13)),
        "features.7",
        r"squeezenet1_[01]",
        split=("features", "classifier"),
    ),
    Family(
        "DenseNet",
        "classifier",
        _numbered("features.denseblock{}", range(1, 5)),
        "features.denseblock3",
        r"densenet\d+",
    ),
    Family(
        "RegNet",
        "fc",
        _numbered("trunk_output.block{}", range(1, 5)),
        "trunk_output.block3",
        r"regnet_[xy]_\w+",
    ),
    Family(
        "ConvNeXt",
        "classifier.2",
        ("features.1", "features.3", "features.5", "features.7"),
        "features.5",
        r"convnext_\w+",
    ),
    _vit(r"vit_b_(16|32)", 12),
    _vit(r"vit_l_(16|32)", 24),
    _vit("vit_h_14", 32),
    Family(
        "Swin",
        "head",
        ("features.1", "features.3", "features.5", "features.7"),
        "features.5",
        r"swin_(v2_)?[tsb]",
        layout="nhwc",
        exact_size=True,
    ),
    Family(
        "MaxViT",
        "classifier.5",
        _numbered("blocks.{}", range(4)),
        "blocks.2",
        "maxvit_t",
        exact_size=True,
    ),
    Family(
        # Blocks grouped as in the paper's stages: 1, 2, 2, 3, 3, 4, 1 blocks.
        "EfficientNet-Lite",
        "_fc",
        ("_blocks.0", "_blocks.2", "_blocks.4", "_blocks.7", "_blocks.10", "_blocks.14", "_blocks.15"),
        "_blocks.10",
        "efficientnet_lite0",
    ),
)


@cache
def torchvision_names() -> tuple[str, ...]:
    """Every classification model in torchvision's registry."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def backbone_names() -> tuple[str, ...]:
    """Every backbone the surgery supports: torchvision's classifiers, then the extras."""
    return torchvision_names() + tuple(sorted(EXTRA_BACKBONES))


@cache
def family_of(backbone: str) -> Family:
    """The description that covers ``backbone``; ValueError naming the valid choices if none."""
    names = backbone_names()
    if backbone not in names:
        raise UnknownBackbone(f"unknown backbone {backbone!r}; choose one of: {', '.join(names)}")
    matches = [f for f in FAMILIES if re.fullmatch(f.pattern, backbone)]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} family descriptions match {backbone!r}; expected exactly one")
    return matches[0]
