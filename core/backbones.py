"""The backbone catalog: every torchvision classifier plus the registered extras, as numbers.

Every number comes from the weights' own metadata (``num_params``, ``_metrics``, ``_ops``,
``_file_size``, ``transforms()``), so nothing is downloaded to build the table and nothing is
copied by hand except what torchvision does not carry: the family and the paper's year.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import torchvision
from torchvision.models import get_model_weights

from core.extras import EXTRA_BACKBONES
from core.families import family_of, torchvision_names
from core.preprocess import Preprocess
from core.weights import weights_on_disk

# (name prefix, year of the paper's first version, paper); the longest matching prefix wins.
PAPERS: tuple[tuple[str, int, str], ...] = (
    ("alexnet", 2012, "ImageNet Classification with Deep Convolutional Neural Networks"),
    ("vgg", 2014, "Very Deep Convolutional Networks for Large-Scale Image Recognition"),
    ("googlenet", 2014, "Going Deeper with Convolutions"),
    ("inception_v3", 2015, "Rethinking the Inception Architecture for Computer Vision"),
    ("resnet", 2015, "Deep Residual Learning for Image Recognition"),
    ("wide_resnet", 2016, "Wide Residual Networks"),
    ("resnext", 2016, "Aggregated Residual Transformations for Deep Neural Networks"),
    ("densenet", 2016, "Densely Connected Convolutional Networks"),
    ("squeezenet", 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters"),
    ("mobilenet_v2", 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"),
    ("mnasnet", 2018, "MnasNet: Platform-Aware Neural Architecture Search for Mobile"),
    ("shufflenet_v2", 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Design"),
    ("mobilenet_v3", 2019, "Searching for MobileNetV3"),
    ("efficientnet_b", 2019, "EfficientNet: Rethinking Model Scaling for CNNs"),
    ("regnet", 2020, "Designing Network Design Spaces"),
    ("vit", 2020, "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale"),
    ("efficientnet_v2", 2021, "EfficientNetV2: Smaller Models and Faster Training"),
    ("swin", 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"),
    ("swin_v2", 2021, "Swin Transformer V2: Scaling Up Capacity and Resolution"),
    ("convnext", 2022, "A ConvNet for the 2020s"),
    ("maxvit", 2022, "MaxViT: Multi-Axis Vision Transformer"),
)

# The ILSVRC classification results as the competitions reported them (top-5 error, %), with the
# depth in weight layers. torchvision's re-trained checkpoints score differently; see history().
COMPETITION_RESULTS: tuple[dict[str, Any], ...] = (
    {"model": "2011 winner (XRCE)", "year": 2011, "top5_error": 26.0, "layers": None, "backbone": None},
    {"model": "AlexNet", "year": 2012, "top5_error": 15.3, "layers": 8, "backbone": "alexnet"},
    {"model": "VGG", "year": 2014, "top5_error": 7.3, "layers": 19, "backbone": "vgg19"},
    {"model": "GoogLeNet", "year": 2014, "top5_error": 6.7, "layers": 22, "backbone": "googlenet"},
    {"model": "ResNet", "year": 2015, "top5_error": 3.57, "layers": 152, "backbone": "resnet152"},
)

# Tried in order when choosing a default; the offline extra is the fallback with no weights on disk.
PREFERRED_DEFAULTS = ("resnet18", "resnet50", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny")
OFFLINE_DEFAULT = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneRow:
    name: str
    family: str
    year: int | None
    paper: str
    params: int
    gflops: float | None
    file_size_mb: float | None
    top1: float | None
    top5: float | None
    input_size: int  # the crop the weights were evaluated at
    resize_size: int
    min_size: int
    weights: str  # the weights' name (torchvision enum member or the extra's source)
    on_disk: bool
    offline: bool  # usable without internet: an extra whose weights ship in a package

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paper_of(name: str) -> tuple[int | None, str]:
    matches = [p for p in PAPERS if name.startswith(p[0])]
    if not matches:
        return None, ""
    _, year, paper = max(matches, key=lambda p: len(p[0]))
    return year, paper


@cache
def preprocess_for(backbone: str) -> Preprocess:
    """Resize, crop and normalisation exactly as the backbone's weights were evaluated."""
    if backbone in EXTRA_BACKBONES:
        return EXTRA_BACKBONES[backbone].preprocess
    transform = _default_weights(backbone).transforms()
    return Preprocess(
        resize=int(transform.resize_size[0]),
        crop=int(transform.crop_size[0]),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
    )


def catalog() -> list[BackboneRow]:
    """One row per backbone: torchvision's registry, then the extras."""
    rows = [_torchvision_row(name) for name in torchvision_names()]
    rows += [_extra_row(name) for name in sorted(EXTRA_BACKBONES)]
    return rows


def row(name: str) -> BackboneRow:
    if name in EXTRA_BACKBONES:
        return _extra_row(name)
    if name not in torchvision_names():
        family_of(name)  # UnknownBackbone, naming the valid choices
    return _torchvision_row(name)


def default_backbone() -> str:
    """A sensible first choice that can actually be built here, without a download."""
    for name in PREFERRED_DEFAULTS:
        if weights_on_disk(name):
            return name
    return OFFLINE_DEFAULT


def history() -> list[dict[str, Any]]:
    """The competition results beside torchvision's own checkpoints of the same architectures."""
    rows = []
    for result in COMPETITION_RESULTS:
        rows.append({**result, "source": "ILSVRC competition result"})
        if result["backbone"]:
            top5 = _default_weights(result["backbone"]).meta["_metrics"]["ImageNet-1K"]["acc@5"]
            rows.append(
                {
                    **result,
                    "top5_error": round(100.0 - top5, 2),
                    "source": f"torchvision checkpoint ({result['backbone']})",
                }
            )
    return rows


def _default_weights(name: str) -> torchvision.models.WeightsEnum:
    return get_model_weights(name).DEFAULT


def _torchvision_row(name: str) -> BackboneRow:
    weights = _default_weights(name)
    meta = weights.meta
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    pre = preprocess_for(name)
    year, paper = paper_of(name)
    return BackboneRow(
        name=name,
        family=family_of(name).name,
        year=year,
        paper=paper,
        params=int(meta["num_params"]),
        gflops=_finite(meta.get("_ops")),
        file_size_mb=_finite(meta.get("_file_size")),
        top1=_finite(metrics.get("acc@1")),
        top5=_finite(metrics.get("acc@5")),
        input_size=pre.crop,
        resize_size=pre.resize,
        min_size=int(max(meta.get("min_size", (1, 1)))),
        weights=str(weights),
        on_disk=weights_on_disk(name),
        offline=False,
    )


def _extra_row(name: str) -> BackboneRow:
    extra = EXTRA_BACKBONES[name]
    return BackboneRow(
        name=name,
        family=extra.family,
        year=extra.year,
        paper=extra.paper,
        params=extra.params,
        gflops=_finite(extra.gflops),
        file_size_mb=_finite(extra.file_size_mb),
        top1=_finite(extra.top1),
        top5=_finite(extra.top5),
        input_size=extra.preprocess.crop,
        resize_size=extra.preprocess.resize,
        min_size=extra.min_size,
        weights=f"{name} (package)",
        on_disk=extra.weights_available(),
        offline=extra.weights_available(),
    )


def _finite(value: Any) -> float | None:
    """JSON has no NaN: missing or non-finite numbers become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
