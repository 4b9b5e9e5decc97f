"""How a backbone wants its pixels: the numbers that travel with every exported model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize``, centre-crop ``crop``, scale to [0, 1], normalise.

    Kept as plain numbers (not a torchvision transform) so that ``preprocess.json`` lets anyone
    run an exported model without our code.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            interpolation=str(data.get("interpolation", "bilinear")),
        )

    def scaled_to(self, crop: int) -> Preprocess:
        """The same recipe at another crop size, keeping the resize/crop ratio (e.g. 256/224)."""
        resize = max(crop, round(crop * self.resize / self.crop))
        return Preprocess(resize, crop, self.mean, self.std, self.interpolation)
