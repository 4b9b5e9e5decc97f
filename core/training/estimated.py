"""What a timed plan says: the estimate's record, apart from the timing itself.

The web server reads estimates (the Train page shows one); the timing imports torch, so the
record lives here, in a module the server may import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Estimate:
    prepare_s: float  # before the first epoch: the set-up, decoding, and (cases 1, 2) the feature
    # pass and the cross-validation that chooses the new layer's penalty
    epoch_s: float  # each epoch after that
    export_s: float  # writing the model at the end
    epochs: int
    train_images: int
    val_images: int
    device: str
    precision: str

    @property
    def first_epoch_s(self) -> float:
        return self.prepare_s + self.epoch_s

    @property
    def total_s(self) -> float:
        return self.prepare_s + self.epoch_s * self.epochs + self.export_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"first_epoch_s": self.first_epoch_s, "total_s": self.total_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Read back what ``to_dict`` wrote (the derived totals are computed again)."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})
