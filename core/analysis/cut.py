"""The frozen plan: keep the whole body (case 1) or cut it after an earlier stage (case 2), decided
by the accuracy the new layer reaches on each option's features.

Features grow from general (edges, textures) to ImageNet-specific with depth (Yosinski et al.,
2014, "How transferable are features in deep neural networks?"), so an earlier stage may carry
the user's classes better than the last. The analysis already holds every stage's pooled output
and the whole body's, from one pass; each is scored by cross-validating the very layer the engine
trains for cases 1 and 2 (``core.training.head``), with LogME and k-NN beside it. The rule:

- case 2, cut after stage k, only when the best stage before the last beats the whole body by more
  than the spread: its interval (``INTERVAL_ERRORS`` standard errors either side of the mean over the folds)
  lies wholly above the whole body's;
- otherwise case 1: the deepest features do as well as any, so keep them all.

Case 2 never cuts at the last stage: that is case 1 less its final layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.analysis.record import HeldOut, StageReading
from core.analysis.scores import Separability, separability
from core.models.backbones import StageFact
from core.training.head import HeadScore, head_accuracy

WHOLE_BODY = "whole body"


@dataclass(frozen=True)
class StageScore:
    """One frozen option's features on the user's classes: a stage (case 2's cut) or, with no
    ``stage``, the whole body (case 1)."""

    stage: StageFact | None
    scores: Separability
    head: HeadScore | None

    @property
    def label(self) -> str:
        return WHOLE_BODY if self.stage is None else f"stage {self.stage.index}"

    def to_record(self) -> StageReading:
        scores = {
            "head_accuracy": HeldOut.of(self.head) if self.head else None,
            "logme": self.scores.logme.to_record(),
            "knn": self.scores.knn.to_record(),
        }
        if self.stage is None:
            return StageReading(stage=WHOLE_BODY, index=None, case=1, **scores)
        fact = self.stage
        return StageReading(
            stage=fact.path,
            index=fact.index,
            case=2,
            channels=fact.channels,
            side=fact.side,
            params_kept=fact.params_kept,
            **scores,
        )


@dataclass(frozen=True)
class CutChoice:
    """The frozen options scored, and which one the evidence takes."""

    backbone: str
    stages: tuple[StageScore, ...]  # shallow to deep, the whole body last
    best: StageFact  # case 2's cut: the best stage before the last
    case: int  # 1 or 2
    gain: float  # the cut's held-out accuracy minus the whole body's

    @property
    def whole_body(self) -> StageScore:
        return self.stages[-1]

    @property
    def cut_score(self) -> StageScore:
        return next(s for s in self.stages if s.stage == self.best)

    @property
    def note(self) -> str:
        """The decision with the numbers that made it."""
        body, cut = self.whole_body.head, self.cut_score.head
        count = len(self.stages) - 1
        if body is None or cut is None:
            return "too few images per class to cross-validate the new layer: keep the whole body"
        numbers = (
            f"the new layer scores {_percent(body)} on the whole body and {_percent(cut)} after "
            f"stage {self.best.index} of {count}, the best before the last"
        )
        if self.case == 2:
            return f"{numbers}: a gain of {self.gain:+.1%} beyond the spread, so cut there"
        return f"{numbers}: no earlier stage beats the deepest features by more than the spread, so keep them all"


def choose_cut(
    backbone: str,
    facts: tuple[StageFact, ...],
    features: dict[str, torch.Tensor],
    body: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    groups: torch.Tensor | None = None,
    seed: int = 0,
) -> CutChoice:
    """Score each stage's pooled ``features`` and the whole ``body``'s, and decide by the rule in
    this module's docstring."""

    def scored(stage: StageFact | None, rows: torch.Tensor) -> StageScore:
        return StageScore(
            stage,
            separability(rows, labels, num_classes, seed=seed),
            head_accuracy(rows, labels, num_classes, groups=groups, seed=seed),
        )

    stages = (*(scored(fact, features[fact.path]) for fact in facts), scored(None, body))
    earlier, whole = stages[:-2] or stages[:-1], stages[-1]
    best = max(earlier, key=lambda s: (_accuracy(s), s.scores.knn.value, -s.stage.index))
    if best.head is None or whole.head is None:
        return CutChoice(backbone, stages, best.stage, 1, 0.0)
    case = 2 if best.head.low > whole.head.high else 1
    return CutChoice(backbone, stages, best.stage, case, best.head.accuracy - whole.head.accuracy)


def _accuracy(score: StageScore) -> float:
    return score.head.accuracy if score.head else score.scores.knn.value


def _percent(score: HeadScore) -> str:
    """The accuracy and its interval, which is left out where it rounds to the accuracy itself
    (every fold at 100% read "100% (100%-100%)")."""
    low, value, high = (f"{x:.0%}" for x in (score.low, score.accuracy, score.high))
    return value if low == value == high else f"{value} ({low}-{high})"
