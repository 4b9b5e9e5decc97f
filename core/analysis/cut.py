"""Where case 2 should cut: the stage whose pooled features best separate the user's classes.

Features grow from general (edges, textures) to ImageNet-specific with depth (Yosinski et al.,
2014, "How transferable are features in deep neural networks?"). Scoring every stage's pooled
output the way backbones are scored (LogME and k-NN) finds where that turn happens for this
data: the best stage is the suggested cut. When the deepest stage wins, the data may not be as
different from ImageNet as it looks, and keeping the whole body (case 1) is worth a try.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from core.analysis.scores import Separability, separability
from core.models.backbones import StageFact


@dataclass(frozen=True)
class StageScore:
    stage: StageFact
    scores: Separability

    def to_dict(self) -> dict[str, Any]:
        fact = self.stage
        return {
            "stage": fact.path,
            "index": fact.index,
            "channels": fact.channels,
            "side": fact.side,
            "params_kept": fact.params_kept,
            **self.scores.to_dict(),
        }


@dataclass(frozen=True)
class CutChoice:
    backbone: str
    stages: tuple[StageScore, ...]  # shallow to deep
    best: StageFact

    @property
    def deepest_is_best(self) -> bool:
        return self.best.index == len(self.stages)

    @property
    def note(self) -> str:
        if self.deepest_is_best:
            return (
                "the deepest stage separates the classes best: the data may not be as different "
                "from ImageNet as it looks, so case 1 (keep the whole body) is worth a try"
            )
        return f"stage {self.best.index} of {len(self.stages)} separates the classes best"


def choose_cut(
    backbone: str,
    facts: tuple[StageFact, ...],
    features: dict[str, torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
) -> CutChoice:
    """Score each stage's pooled ``features`` and pick the best by the mean of its LogME and
    k-NN ranks (ties: the higher k-NN accuracy, then the shallower stage, which keeps less)."""
    scored = tuple(
        StageScore(fact, separability(features[fact.path], labels, num_classes, seed=seed)) for fact in facts
    )
    by_logme = sorted(scored, key=lambda s: -s.scores.logme.value)
    by_knn = sorted(scored, key=lambda s: -s.scores.knn.value)
    best = min(
        scored,
        key=lambda s: (by_logme.index(s) + by_knn.index(s), -s.scores.knn.value, s.stage.index),
    )
    return CutChoice(backbone, scored, best.stage)
