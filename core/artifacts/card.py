"""What an exported model is, read without loading it: its classes and its input.

``labels.json`` and ``preprocess.json`` sit beside ``model.pt2`` (``core.artifacts.export``).
Pages show them before anyone classifies an image, and the web server must not import torch to
say what a model knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.models.preprocess import Preprocess
from core.storage import read_json

LABELS_FILE = "labels.json"
PREPROCESS_FILE = "preprocess.json"
MODEL_CARD_FILE = "MODEL_CARD.md"  # for people and the Hub (core.artifacts.model_card)
# An int8 copy's figures against the float model (``core.artifacts.quantize``), and the
# validation accuracy it may lose unless told otherwise, as a fraction: the card states both.
INT8_CHECK_FILE = "int8.json"
INT8_MAX_DROP = 0.02


@dataclass(frozen=True)
class ModelCard:
    """An exported model's classes, in output order, and how an image becomes its input."""

    labels: tuple[str, ...]
    pre: Preprocess

    @classmethod
    def read(cls, model_dir: Path) -> ModelCard:
        """The card of the model in ``model_dir``; ``FileNotFoundError`` naming the missing file
        when the model was never exported there."""
        model_dir = Path(model_dir)
        for name in (LABELS_FILE, PREPROCESS_FILE):
            if not (model_dir / name).is_file():
                raise FileNotFoundError(f"{model_dir / name} is missing: is it a finished run's model/?")
        labels = tuple(str(label) for label in read_json(model_dir / LABELS_FILE))
        return cls(labels, Preprocess.from_dict(read_json(model_dir / PREPROCESS_FILE)))

    @property
    def summary(self) -> str:
        """What the model does, in a sentence for people: the classes it tells apart, and what
        of an image it sees."""
        return (
            f"Classifies an image as one of {len(self.labels)} classes ({', '.join(self.labels)}), whatever "
            f"the image shows. It sees the centre {self.pre.crop}x{self.pre.crop} px of the image "
            f"resized to {self.pre.resize} px on its shorter side."
        )
