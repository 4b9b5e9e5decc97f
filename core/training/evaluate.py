"""A finished run checked on a second labelled data set: accuracy, per-class scores, confusion.

Teams check a model on data it has never seen before they use it. The labelled data goes
through the same ``ingest`` as training data (every check, a validated copy kept by content),
and the model is the exported one, run as Predict runs it: these are the numbers a user of the
downloaded bundle would get.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from core.artifacts.predict import Predictor
from core.data import ingest
from core.errors import TransferLabError
from core.training import metrics


class EvaluateError(TransferLabError, ValueError):
    """Labelled data that cannot be scored by this model (classes it does not know)."""


def evaluate(
    model_dir: Path,
    data: str | Path,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score the exported model in ``model_dir`` on every image of ``data`` (a zip or folder of
    class folders, named as the model's classes; a subset of them will do); ``progress(done,
    total)`` hears of each batch scored."""
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
    logits = _logits(predictor, [s.path for s in samples], batch_size, progress)
    report = metrics.report(logits, labels, [s.name or s.path.name for s in samples], predictor.labels)
    return {
        **report,
        "images": len(samples),
        "majority_rate": metrics.majority_rate(labels.tolist(), len(predictor.labels)),
        "labels": predictor.labels,
        "data": dataset.report.source.get("name", str(data)),
    }


def _logits(
    predictor: Predictor, paths: list[Path], batch_size: int, progress: Callable[[int, int], None] | None
) -> torch.Tensor:
    """The logits of every image, a batch at a time so that a job can say how far it got."""
    engine = predictor.engine(len(paths))
    chunks = []
    for start in range(0, len(paths), batch_size):
        chunks.append(predictor.logits(paths[start : start + batch_size], batch_size, engine))
        if progress is not None:
            progress(min(start + batch_size, len(paths)), len(paths))
    return torch.cat(chunks) if chunks else torch.zeros(0, len(predictor.labels))
