"""Predictions from a run's ``model/`` alone: model.pt2, preprocess.json and labels.json.

Nothing here builds or adapts a network: this is what anyone holding the exported files would
write, so it doubles as the proof that they are enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.artifacts.export import load_model
from core.data.errors import IngestError
from core.data.images import RESAMPLING, decode_image, upright_rgb
from core.errors import TransferLabError
from core.models.preprocess import Preprocess
from core.models.runtime import CPU_FP32, Engine

ImageInput = str | Path | bytes | Image.Image


class PredictError(TransferLabError, ValueError):
    """An image that cannot be read."""


@dataclass(frozen=True)
class Prediction:
    file: str
    top: tuple[tuple[str, float], ...]  # (label, probability), most probable first


def image_to_input(image: Image.Image, pre: Preprocess) -> torch.Tensor:
    """``[3, crop, crop]`` float32: upright RGB, shorter side to ``resize``, centre crop, normalise.

    The image is made RGB exactly as training decoded its images (alpha flattened onto white,
    16-bit scaled to 8), and the centre square is resized in one step (the same pixels as
    resizing the shorter side and cropping), as the training cache does, so predictions see
    what validation saw.
    """
    image = upright_rgb(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.resize(
        (pre.resize, pre.resize), RESAMPLING[pre.interpolation], box=(left, top, left + side, top + side)
    )
    pixels = torch.from_numpy(np.asarray(square, dtype=np.uint8).copy()).permute(2, 0, 1)
    offset = round((pre.resize - pre.crop) / 2.0)  # torchvision's CenterCrop rounding
    pixels = pixels[:, offset : offset + pre.crop, offset : offset + pre.crop].float() / 255
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return (pixels - mean) / std


class Predictor:
    """An exported model ready to classify images."""

    def __init__(self, model_dir: Path) -> None:
        self.model, self.pre, self.labels = load_model(model_dir)

    @classmethod
    def of(cls, model: nn.Module, pre: Preprocess, labels: Sequence[str]) -> Predictor:
        """A predictor around a model in memory (float32, CPU), with the exported files' inputs."""
        predictor = cls.__new__(cls)
        predictor.model, predictor.pre, predictor.labels = model, pre, list(labels)
        return predictor

    def engine(self, images: int) -> Engine:
        """What runs the model over ``images`` inputs: torch, or the fastest inference runtime on
        this machine when there are enough of them to pay for converting (``core.models.runtime``).
        One engine can serve several calls that together hold ``images`` inputs."""
        return Engine(self.model, CPU_FP32, images)

    def probabilities(self, inputs: torch.Tensor, engine: Engine | None = None) -> torch.Tensor:
        """Class probabilities ``[N, classes]`` of preprocessed inputs ``[N, 3, crop, crop]``."""
        engine = engine or self.engine(len(inputs))
        return engine(inputs)[0].float().softmax(1)

    def logits(
        self, images: Sequence[ImageInput], batch_size: int = 32, engine: Engine | None = None
    ) -> torch.Tensor:
        """Logits ``[N, classes]`` of ``images``, prepared exactly as ``predict`` prepares them."""
        engine = engine or self.engine(len(images))
        chunks = [
            engine(self._inputs(images[i : i + batch_size]))[0] for i in range(0, len(images), batch_size)
        ]
        return torch.cat(chunks).float() if chunks else torch.zeros(0, len(self.labels))

    def _inputs(self, images: Sequence[ImageInput]) -> torch.Tensor:
        return torch.stack([image_to_input(open_image(image), self.pre) for image in images])

    def predict(
        self,
        images: Sequence[ImageInput],
        top_k: int = 5,
        batch_size: int = 32,
        engine: Engine | None = None,
    ) -> list[Prediction]:
        """The ``top_k`` classes of each image, most probable first."""
        engine = engine or self.engine(len(images))
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            ranked = self.ranked(self.probabilities(self._inputs(chunk), engine), top_k)
            results += [Prediction(_name(image), top) for image, top in zip(chunk, ranked, strict=True)]
        return results

    def ranked(self, probabilities: torch.Tensor, top_k: int) -> list[tuple[tuple[str, float], ...]]:
        """Each row's ``top_k`` (label, probability), most probable first."""
        values, indices = probabilities.topk(min(top_k, len(self.labels)), dim=1)
        return [
            tuple((self.labels[c], p) for c, p in zip(row_indices, row_values))
            for row_indices, row_values in zip(indices.tolist(), values.tolist())
        ]


def open_image(image: ImageInput) -> Image.Image:
    """A path or the file's bytes decoded as training decoded its images; a picture as is."""
    if isinstance(image, Image.Image):
        return image
    try:
        return decode_image(image)
    except IngestError as exc:  # read_image turns every decoder failure into one
        raise PredictError(f"cannot read image {_name(image)}: {exc}") from None


def _name(image: ImageInput) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return "<image>" if isinstance(image, Image.Image) else "<bytes>"
