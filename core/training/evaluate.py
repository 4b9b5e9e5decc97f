"""A finished run checked on a second labelled data set: accuracy, per-class scores, confusion.

Teams check a model on data it has never seen before they use it. The labelled data goes
through the same ``ingest`` as training data (every check, a validated copy kept by content),
and the model is the exported one, run as Predict runs it: these are the numbers a user of the
downloaded bundle would get.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.artifacts.predict import Predictor
from core.data import ingest
from core.errors import TransferLabError
from core.training import metrics


class EvaluateError(TransferLabError, ValueError):
    """Labelled data that cannot be scored by this model (classes it does not know)."""


def evaluate(model_dir: Path, data: str | Path, batch_size: int = 32) -> dict[str, Any]:
    """Score the exported model in ``model_dir`` on every image of ``data`` (a zip or folder of
    class folders, named as the model's classes; a subset of them will do)."""
    predictor = Predictor(model_dir)
    dataset = ingest(data)
    unknown = sorted(set(dataset.classes) - set(predictor.labels))
    if unknown:
        raise EvaluateError(
            f"the model does not know the classes {', '.join(map(repr, unknown))}; it knows "
            f"{', '.join(map(repr, predictor.labels))}"
        )
    samples = dataset.train + dataset.val + dataset.test
    labels = torch.tensor([predictor.labels.index(dataset.classes[s.label]) for s in samples])
    logits = predictor.logits([s.path for s in samples], batch_size)
    report = metrics.report(logits, labels, [s.name or s.path.name for s in samples], predictor.labels)
    return {
        **report,
        "images": len(samples),
        "majority_rate": metrics.majority_rate(labels.tolist(), len(predictor.labels)),
        "labels": predictor.labels,
        "data": dataset.report.source.get("name", str(data)),
    }
