"""Size measured, not only counted: a learning curve of the frozen plan's features, and the size
(small or large, the matrix's first question) it and the count lead to.

The curve is the solved new layer's cross-validated accuracy (``core.training.head``) on 25%, 50%
and 100% of the sample, nested subsets drawn per class. Its slope per doubling of the images says
what more data would buy: rising steeply, more data or fine-tuning will pay; flat, the frozen
features already have what there is. The size rule, first match wins:

1. fewer than ``FEW_PER_CLASS`` images per class: small (a class over-fits on its own);
2. no curve (too few images at a quarter of the sample to fold): the count against the line;
3. rising (``STEEP`` or more per doubling) with ``LARGE_PER_CLASS`` images per class: large;
4. flat (``FLAT`` or less per doubling, or ``CEILING`` reached): small;
5. otherwise: the count against the line (10,000 images by default), the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.advice.cases import FEW_PER_CLASS, SizeReading, size_of
from core.analysis import record
from core.training.head import HeadScore, head_accuracy

FRACTIONS = (0.25, 0.5, 1.0)
STEEP = 0.05  # accuracy gained per doubling of the images from which the curve rises steeply
FLAT = 0.02  # and at or below which it is flat
CEILING = 0.98  # accuracy past which nothing is left to gain
LARGE_PER_CLASS = 500  # images per class from which a rising curve calls the data set large


@dataclass(frozen=True)
class CurvePoint:
    fraction: float
    images: int
    head: HeadScore

    def to_record(self) -> record.CurvePoint:
        return record.CurvePoint(self.fraction, self.images, record.HeldOut.of(self.head))


@dataclass(frozen=True)
class LearningCurve:
    points: tuple[CurvePoint, ...]  # smallest first; empty when the sample is too small to fold

    @property
    def per_doubling(self) -> float:
        """The least-squares slope of accuracy against log2 of the images: gained per doubling."""
        if len(self.points) < 2:
            return 0.0
        xs = torch.tensor([p.fraction for p in self.points], dtype=torch.float64).log2()
        ys = torch.tensor([p.head.accuracy for p in self.points], dtype=torch.float64)
        xs = xs - xs.mean()
        return float((xs * (ys - ys.mean())).sum() / xs.square().sum())

    @property
    def shape(self) -> str:
        """``rising``, ``flat``, ``between``, or ``unknown`` without a curve."""
        if len(self.points) < len(FRACTIONS):
            return "unknown"
        if self.per_doubling <= FLAT or self.points[-1].head.accuracy >= CEILING:
            return "flat"
        return "rising" if self.per_doubling >= STEEP else "between"

    def to_record(self) -> record.CurveReading:
        return record.CurveReading(
            points=tuple(p.to_record() for p in self.points),
            per_doubling=round(self.per_doubling, 4),
            shape=self.shape,
            thresholds={"steep": STEEP, "flat": FLAT, "ceiling": CEILING},
        )


def learning_curve(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    groups: torch.Tensor | None = None,
    seed: int = 0,
    whole: HeadScore | None = None,
) -> LearningCurve:
    """The new layer's cross-validated accuracy on nested, per-class shares of ``features``;
    ``whole``, the score already measured on all of them (the same folds), is not fitted again."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    points = []
    for fraction in FRACTIONS:
        rows = _share(labels, order, fraction)
        head = (
            whole
            if fraction == 1.0 and whole is not None
            else head_accuracy(
                features[rows],
                labels[rows],
                num_classes,
                groups=None if groups is None else groups[rows],
                seed=seed,
            )
        )
        if head is None:
            return LearningCurve(())
        points.append(CurvePoint(fraction, len(rows), head))
    return LearningCurve(tuple(points))


def measured_size(curve: LearningCurve, images: int, classes: int, dividing_line: int) -> SizeReading:
    """The size by the rule in this module's docstring."""
    per_class = images / classes
    counted = size_of(images, dividing_line)
    slope = f"{curve.per_doubling:+.1%} per doubling of the images"
    if per_class < FEW_PER_CLASS:
        return SizeReading("small", f"only {per_class:.0f} images per class")
    if curve.shape == "unknown":
        return SizeReading(
            counted, f"too few images for a learning curve: {images:,} counted against {dividing_line:,}"
        )
    if curve.shape == "rising" and per_class >= LARGE_PER_CLASS:
        return SizeReading(
            "large",
            f"the learning curve still rises ({slope}) and there are {per_class:,.0f} images per class",
        )
    if curve.shape == "flat":
        return SizeReading(
            "small", f"the learning curve is flat ({slope}): the frozen features have what there is"
        )
    return SizeReading(
        counted,
        f"the learning curve ({slope}) cannot overrule the count: {images:,} against {dividing_line:,}",
    )


def _share(labels: torch.Tensor, order: torch.Tensor, fraction: float) -> torch.Tensor:
    """The first ``fraction`` of each class in ``order`` (at least two of it): nested shares."""
    rows = []
    for label in labels.unique():
        members = order[labels[order] == label]
        rows.append(members[: max(2, round(fraction * len(members)))])
    return torch.cat(rows).sort().values
