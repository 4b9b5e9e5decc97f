"""What a trained classifier got right and wrong, from its logits: the numbers in metrics.json."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

TOP_LOSSES = 16
# "Large" imbalance: the most common class has at least this many times the images of the rarest.
IMBALANCE_RATIO = 3.0
# The validation accuracy's interval: 95%, z = 1.96.
WILSON_LEVEL = 0.95
WILSON_Z = 1.959964


def class_counts(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    return torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes)


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """``n / (k * count_c)``: each class contributes equally to the loss (scikit-learn's "balanced")."""
    counts = class_counts(labels, num_classes).float()
    return counts.sum() / (num_classes * counts.clamp(min=1))


def imbalance_ratio(labels: Sequence[int], num_classes: int) -> float:
    counts = class_counts(labels, num_classes)
    present = counts[counts > 0]
    return float(present.max() / present.min()) if len(present) else 1.0


def majority_rate(labels: Sequence[int], num_classes: int) -> float:
    """The accuracy of always answering the most common class: the bar a model must clear."""
    counts = class_counts(labels, num_classes)
    return float(counts.max() / counts.sum()) if counts.sum() else 0.0


def wilson_interval(correct: int, images: int, z: float = WILSON_Z) -> dict[str, float]:
    """The Wilson score interval of an accuracy of ``correct`` out of ``images``: how far the
    accuracy on a validation set this size may stray from the model's true one. Unlike the
    normal approximation it stays within [0, 1] and does not collapse to a point at 0% or 100%."""
    if images == 0:
        return {"low": 0.0, "high": 1.0, "level": WILSON_LEVEL, "images": 0}
    rate = correct / images
    centre = (rate + z * z / (2 * images)) / (1 + z * z / images)
    half = z * math.sqrt(rate * (1 - rate) / images + z * z / (4 * images * images)) / (1 + z * z / images)
    return {
        "low": round(max(0.0, centre - half), 4),
        "high": round(min(1.0, centre + half), 4),
        "level": WILSON_LEVEL,
        "images": images,
    }


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean()) if len(labels) else 0.0


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are the true classes, columns the predicted ones."""
    pairs = labels * num_classes + logits.argmax(1)
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class(confusion: torch.Tensor, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class; 0 where a ratio has nothing to divide."""
    hits = confusion.diag().double()
    predicted = confusion.sum(0).double()
    support = confusion.sum(1).double()
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, hits / support.clamp(min=1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-12), 0.0)
    return {
        name: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def top_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    files: Sequence[str],
    names: Sequence[str],
    k: int = TOP_LOSSES,
) -> list[dict[str, Any]]:
    """The ``k`` examples the model is most wrong about, worst first: where to look for bad labels."""
    losses = F.cross_entropy(logits, labels, reduction="none")
    probabilities = logits.softmax(1)
    rows = []
    for i in losses.argsort(descending=True)[:k].tolist():
        predicted = int(probabilities[i].argmax())
        rows.append(
            {
                "file": files[i],
                "true": names[int(labels[i])],
                "predicted": names[predicted],
                "confidence": round(float(probabilities[i, predicted]), 4),
                "loss": round(float(losses[i]), 4),
            }
        )
    return rows


def report(
    logits: torch.Tensor, labels: torch.Tensor, files: Sequence[str], names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, loss, per-class scores, confusion matrix and top losses of one split."""
    logits = logits.float()
    confusion = confusion_matrix(logits, labels, len(names))
    return {
        "accuracy": round(accuracy(logits, labels), 4),
        "loss": round(float(F.cross_entropy(logits, labels)), 4) if len(labels) else 0.0,
        "per_class": per_class(confusion, names),
        "confusion_matrix": confusion.tolist(),
        "top_losses": top_losses(logits, labels, files, names),
    }
