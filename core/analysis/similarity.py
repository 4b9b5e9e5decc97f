"""How close the user's images are to ImageNet, as one number, an answer (similar, unsure, different) and its evidence.

The number explains the advice; it does not decide it (the frozen options' held-out accuracy
does, ``core.analysis.cut``): a shift of the look moves these statistics as far as one of content.

The number comes from the domain shift of the deepest quarter of EfficientNet-Lite0's BatchNorm
layers (``core.analysis.shift``): where ImageNet's high-level features stop describing the
images. It is mapped to a score in [0, 1] by a logistic curve in the log of the shift, centred on
``MIDPOINT``; the ImageNet head's confidence is reported beside it. Thresholds were fixed on one
set of data and checked on a disjoint one (``bench/similarity.py``; bench/README.md has both sets and
the margins).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.analysis.record import SimilarityEvidence
from core.analysis.shift import depth_profile

REFERENCE_BACKBONE = "efficientnet_lite0"  # the thresholds below are this network's
# The deepest-quarter shift scored 0.5: the geometric mean of the largest shift of a natural-photo
# fit set (0.138) and the smallest of the other fit sets (1.063), rounded (bench/similarity.py).
MIDPOINT = 0.38
STEEPNESS = 3.0  # how fast the score leaves 0.5 (per e-fold of the shift)
SIMILAR_AT = 0.6  # scores at or above: similar; at or below DIFFERENT_AT: different; between: unsure
DIFFERENT_AT = 0.4


@dataclass(frozen=True)
class Similarity:
    """The measured answer to "are these images like ImageNet's?"."""

    score: float  # 0 (nothing alike) .. 1 (ImageNet-like)
    answer: str  # similar | unsure | different: the words cases.recommend takes
    shift_by_depth: list[float]  # mean BatchNorm shift per quarter of the network, shallow to deep
    layer_shifts: list[float]  # per BatchNorm layer
    top1_probability: float | None  # mean ImageNet top-1 probability over the sample
    energy: float | None  # mean logsumexp of the ImageNet logits (higher: more in-distribution)
    backbone: str

    @property
    def evidence(self) -> SimilarityEvidence:
        return SimilarityEvidence(
            similarity=round(self.score, 3),
            verdict=self.answer,
            shift_by_depth=tuple(round(s, 4) for s in self.shift_by_depth),
            deepest_shift=round(self.shift_by_depth[-1], 4),
            top1_probability=_rounded(self.top1_probability),
            energy=_rounded(self.energy),
            backbone=self.backbone,
            thresholds={"midpoint_shift": MIDPOINT, "similar_at": SIMILAR_AT, "different_at": DIFFERENT_AT},
        )


def score_of(deepest_shift: float) -> float:
    """The similarity score of a deepest-quarter shift: 0.5 at ``MIDPOINT``, towards 1 below it."""
    if deepest_shift <= 0:
        return 1.0
    return 1 / (1 + math.exp(STEEPNESS * (math.log(deepest_shift) - math.log(MIDPOINT))))


def answer_of(score: float) -> str:
    if score >= SIMILAR_AT:
        return "similar"
    if score <= DIFFERENT_AT:
        return "different"
    return "unsure"


def measure(layer_shifts: list[float], logits: torch.Tensor | None, backbone: str) -> Similarity:
    """Similarity from one pass of the reference backbone: its BatchNorm shifts and logits."""
    profile = depth_profile(layer_shifts)
    if not profile:
        raise ValueError(f"{backbone} has too few BatchNorm layers to measure a shift by depth")
    score = score_of(profile[-1])
    top1 = energy = None
    if logits is not None and logits.shape[1] == 1000:
        top1 = float(logits.float().softmax(dim=1).max(dim=1).values.mean())
        energy = float(logits.float().logsumexp(dim=1).mean())
    return Similarity(score, answer_of(score), profile, list(layer_shifts), top1, energy, backbone)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
