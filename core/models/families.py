"""Every supported architecture family, described once, as data: its facts and its anatomy.

One row per family: the paper it comes from, a line for people, where its head is, where it may
be cut, how its inputs must be sized. Members whose anatomy differs (VGG by depth, MobileNet v3
by size) are the family's variants; a variant may also name its own paper (ResNeXt within
ResNet). The catalog, the surgery and the pages all read this one table, through the
``Backbone`` record that ``core.models.backbones.resolve`` makes of a name. Submodules are named by
dotted path (``"layer3"``, ``"features.7"``), never by position among children.

**Default cut (case 2).** For convolutional nets it is the end of the last stage at stride 16,
the mid-level "conv4" features (ResNet's ``layer3``, VGG's fourth pooling, ...): general enough
to transfer to a different domain, far enough from the ImageNet-specific top. Exceptions: AlexNet
(its stride-16 stage is its last three convolutions; the cut keeps the first of them),
SqueezeNet (likewise; the cut is after fire5, at stride 8), and ViT (no strides; half its
encoder layers). ``tests/test_backbones.py`` checks the rule against each stage's real stride.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

LAYOUTS = ("nchw", "nhwc", "tokens")
# A stage list, or a rule that reads it off the architecture (built on the meta device): for
# families whose members differ in depth in ways a name does not tell (EfficientNet-Lite).
Stages = tuple[str, ...] | Callable[["nn.Module"], tuple[str, ...]]


@dataclass(frozen=True)
class Paper:
    year: int  # of the paper's first version
    title: str


@dataclass(frozen=True)
class Variant:
    """Members of a family (a regular expression over names) that share one anatomy."""

    members: str
    stages: Stages  # ordered dotted module names; case 2 may cut after any of them
    default_cut: str | int  # a stage name, or its index when the stages come from a rule
    paper: Paper | None = None  # when it is not the family's own


@dataclass(frozen=True)
class AuxHeads:
    """GoogLeNet's and Inception v3's auxiliary classifiers."""

    modules: tuple[str, ...]  # removed when the aux heads are disabled (cases 1 and 2)
    layers: tuple[str, ...]  # their final linear layers, replaced when they are kept (cases 3, 4)
    weight: float  # their loss weight in the papers: 0.3 GoogLeNet, 0.4 Inception v3
    min_size: int = 1  # smallest input they accept (Inception v3's 5x5 conv needs 299 px)


@dataclass(frozen=True)
class Family:
    name: str  # display name, e.g. "ResNet"
    paper: Paper
    note: str  # one line for people choosing a backbone
    head: str  # dotted path of the final classification layer
    variants: tuple[Variant, ...]
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
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout {self.layout!r}; choose one of: {', '.join(LAYOUTS)}")
        for variant in self.variants:
            if isinstance(variant.stages, tuple) and variant.default_cut not in variant.stages:
                raise ValueError(f"{self.name}: default cut {variant.default_cut!r} is not one of its stages")

    def input_size_rule(self, min_size: int, case: int | None = None) -> tuple[int, int | None]:
        """``(min_size, exact_size or None)`` in pixels for square inputs in ``case`` of a member
        whose architecture accepts ``min_size``; without a case, the rule that holds for all four
        (Inception v3 keeps its auxiliary head in cases 3 and 4, and that head needs 299 px)."""
        if self.aux is not None and case not in (1, 2):
            min_size = max(min_size, self.aux.min_size)
        return min_size, (min_size if self.exact_size else None)


def _numbered(template: str, indices: range) -> tuple[str, ...]:
    return tuple(template.format(i) for i in indices)


def _vgg(members: str, pools: tuple[int, ...]) -> Variant:
    """VGG's stages end at its max-pooling layers, whose indices depend on depth and BatchNorm."""
    stages = tuple(f"features.{i}" for i in pools)
    return Variant(members, stages, stages[3])


def _vit(members: str, depth: int) -> Variant:
    stages = _numbered("encoder.layers.encoder_layer_{}", range(depth))
    return Variant(members, stages, stages[depth // 2 - 1])


def _lite_stages(model: nn.Module) -> tuple[str, ...]:
    """EfficientNet-Lite's blocks grouped as in the paper's stages: a group starts where a block's
    stride is given as a list (the package's mark of a repeat group's first block)."""
    blocks = list(model._blocks)
    ends = [
        i
        for i in range(len(blocks))
        if i + 1 == len(blocks) or isinstance(blocks[i + 1]._block_args.stride, list)
    ]
    return tuple(f"_blocks.{i}" for i in ends)


_MOBILENET_V3_LARGE = ("features.1", "features.3", "features.6", "features.12", "features.15", "features.16")
_MOBILENET_V3_SMALL = ("features.1", "features.3", "features.8", "features.11", "features.12")
_GOOGLENET = tuple(f"inception{block}" for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"))
_INCEPTION_V3 = tuple(
    f"Mixed_{block}" for block in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")
)

FAMILIES: tuple[Family, ...] = (
    Family(
        "AlexNet",
        Paper(2012, "ImageNet Classification with Deep Convolutional Neural Networks"),
        "The 2012 network that started deep learning's run on ImageNet: five convolutions, three "
        "large fully connected layers.",
        "classifier.6",
        (
            Variant(
                "alexnet",
                ("features.2", "features.5", "features.7", "features.9", "features.12"),
                "features.7",
            ),
        ),
    ),
    Family(
        "VGG",
        Paper(2014, "Very Deep Convolutional Networks for Large-Scale Image Recognition"),
        "Simple and uniform: stacks of 3x3 convolutions. A common, easy-to-understand start, but "
        "heavy in parameters and compute.",
        "classifier.6",
        (
            _vgg("vgg11", (2, 5, 10, 15, 20)),
            _vgg("vgg11_bn", (3, 7, 14, 21, 28)),
            _vgg("vgg13", (4, 9, 14, 19, 24)),
            _vgg("vgg13_bn", (6, 13, 20, 27, 34)),
            _vgg("vgg16", (4, 9, 16, 23, 30)),
            _vgg("vgg16_bn", (6, 13, 23, 33, 43)),
            _vgg("vgg19", (4, 9, 18, 27, 36)),
            _vgg("vgg19_bn", (6, 13, 26, 39, 52)),
        ),
    ),
    Family(
        "GoogLeNet",
        Paper(2014, "Going Deeper with Convolutions"),
        "Fast for its accuracy thanks to inception modules, which run several filter sizes side "
        "by side and concatenate them.",
        "fc",
        (Variant("googlenet", _GOOGLENET, "inception4e"),),
        transform_input=True,
        aux=AuxHeads(("aux1", "aux2"), ("aux1.fc2", "aux2.fc2"), 0.3),
    ),
    Family(
        "Inception v3",
        Paper(2015, "Rethinking the Inception Architecture for Computer Vision"),
        "GoogLeNet refined: factorised convolutions and label smoothing, at 299 px.",
        "fc",
        (Variant("inception_v3", _INCEPTION_V3, "Mixed_6e"),),
        transform_input=True,
        aux=AuxHeads(("AuxLogits",), ("AuxLogits.fc",), 0.4, min_size=299),
    ),
    Family(
        "ResNet",
        Paper(2015, "Deep Residual Learning for Image Recognition"),
        "Residual connections let it go deepest (152 layers) and made it the most accurate of the "
        "classic networks; still the default starting point.",
        "fc",
        (
            Variant(r"resnet\d+", ("layer1", "layer2", "layer3", "layer4"), "layer3"),
            Variant(
                r"resnext\w+",
                ("layer1", "layer2", "layer3", "layer4"),
                "layer3",
                Paper(2016, "Aggregated Residual Transformations for Deep Neural Networks"),
            ),
            Variant(
                r"wide_resnet\w+",
                ("layer1", "layer2", "layer3", "layer4"),
                "layer3",
                Paper(2016, "Wide Residual Networks"),
            ),
        ),
    ),
    Family(
        "DenseNet",
        Paper(2016, "Densely Connected Convolutional Networks"),
        "Every layer sees all earlier ones in its block: few parameters, much memory.",
        "classifier",
        (Variant(r"densenet\d+", _numbered("features.denseblock{}", range(1, 5)), "features.denseblock3"),),
    ),
    Family(
        "SqueezeNet",
        Paper(2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters"),
        "AlexNet's accuracy in a network of about a million parameters.",
        "classifier.1",
        (Variant(r"squeezenet1_[01]", _numbered("features.{}", range(2, 13)), "features.7"),),
        split=("features", "classifier"),
    ),
    Family(
        "MobileNet v2",
        Paper(2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"),
        "Built for phones: inverted residual blocks of depthwise convolutions.",
        "classifier.1",
        (
            Variant(
                "mobilenet_v2",
                ("features.1", "features.3", "features.6", "features.13", "features.17", "features.18"),
                "features.13",
            ),
        ),
    ),
    Family(
        "MNASNet",
        Paper(2018, "MnasNet: Platform-Aware Neural Architecture Search for Mobile"),
        "A mobile network found by architecture search, timed on real phones.",
        "classifier.1",
        (
            Variant(
                r"mnasnet\d_\d+",
                ("layers.8", "layers.9", "layers.10", "layers.11", "layers.12", "layers.13", "layers.16"),
                "layers.11",
            ),
        ),
    ),
    Family(
        "ShuffleNet v2",
        Paper(2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Design"),
        "Designed for measured speed rather than counted operations: channel split and shuffle.",
        "fc",
        (Variant(r"shufflenet_v2_x\d_\d", ("stage2", "stage3", "stage4", "conv5"), "stage3"),),
    ),
    Family(
        "MobileNet v3",
        Paper(2019, "Searching for MobileNetV3"),
        "MobileNet v2 tuned by search, with squeeze-and-excitation and hard-swish.",
        "classifier.3",
        (
            Variant("mobilenet_v3_large", _MOBILENET_V3_LARGE, "features.12"),
            Variant("mobilenet_v3_small", _MOBILENET_V3_SMALL, "features.8"),
        ),
    ),
    Family(
        "EfficientNet",
        Paper(2019, "EfficientNet: Rethinking Model Scaling for CNNs"),
        "Depth, width and resolution scaled together: accurate for its compute.",
        "classifier.1",
        (Variant(r"efficientnet_b\d", _numbered("features.{}", range(1, 9)), "features.5"),),
    ),
    Family(
        "EfficientNet-Lite",
        Paper(
            2020,
            "EfficientNet: Rethinking Model Scaling for CNNs (Lite variant: no SE, ReLU6, fixed stem/head)",
        ),
        "EfficientNet made friendly to phones and quantisation; its ImageNet weights ship in a "
        "Python package, so it works offline.",
        "_fc",
        (
            Variant(r"efficientnet_lite\d", _lite_stages, 4),
        ),  # blocks in the paper's 7 stages; stage 5 at stride 16
    ),
    Family(
        "RegNet",
        Paper(2020, "Designing Network Design Spaces"),
        "A family drawn from a designed space of simple, regular networks, from tiny to huge.",
        "fc",
        (Variant(r"regnet_[xy]_\w+", _numbered("trunk_output.block{}", range(1, 5)), "trunk_output.block3"),),
    ),
    Family(
        "ViT",
        Paper(2020, "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale"),
        "A transformer over image patches: very accurate when pre-trained on much data; needs its "
        "exact input size.",
        "heads.head",
        (_vit(r"vit_b_(16|32)", 12), _vit(r"vit_l_(16|32)", 24), _vit("vit_h_14", 32)),
        layout="tokens",
        exact_size=True,
        size_kwarg="image_size",
    ),
    Family(
        "EfficientNet v2",
        Paper(2021, "EfficientNetV2: Smaller Models and Faster Training"),
        "EfficientNet retuned for training speed, with fused convolutions in its early stages.",
        "classifier.1",
        (
            Variant("efficientnet_v2_s", _numbered("features.{}", range(1, 8)), "features.5"),
            Variant("efficientnet_v2_[ml]", _numbered("features.{}", range(1, 9)), "features.5"),
        ),
    ),
    Family(
        "Swin",
        Paper(2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"),
        "A transformer with local windows and a pyramid of resolutions, like a convnet's.",
        "head",
        (
            Variant(r"swin_[tsb]", ("features.1", "features.3", "features.5", "features.7"), "features.5"),
            Variant(
                r"swin_v2_[tsb]",
                ("features.1", "features.3", "features.5", "features.7"),
                "features.5",
                Paper(2021, "Swin Transformer V2: Scaling Up Capacity and Resolution"),
            ),
        ),
        layout="nhwc",
        exact_size=True,
    ),
    Family(
        "ConvNeXt",
        Paper(2022, "A ConvNet for the 2020s"),
        "A plain convnet modernised with transformer-era choices; as accurate as Swin.",
        "classifier.2",
        (Variant(r"convnext_\w+", ("features.1", "features.3", "features.5", "features.7"), "features.5"),),
    ),
    Family(
        "MaxViT",
        Paper(2022, "MaxViT: Multi-Axis Vision Transformer"),
        "Convolutions with local and grid attention in every block.",
        "classifier.5",
        (Variant("maxvit_t", _numbered("blocks.{}", range(4)), "blocks.2"),),
        exact_size=True,
    ),
)


def family_of(name: str) -> tuple[Family, Variant]:
    """The family and variant whose members include backbone ``name``: exactly one, or LookupError."""
    matches = [(f, v) for f in FAMILIES for v in f.variants if re.fullmatch(v.members, name)]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} family descriptions match {name!r}; expected exactly one")
    return matches[0]
