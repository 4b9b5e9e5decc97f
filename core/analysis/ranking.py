"""Backbones ranked before any training, from their frozen features on the user's sample.

Published transferability estimators agree only modestly with fine-tuned accuracy, and ordering
by ImageNet top-1 alone does about as well as most of them, so the evidence (LogME and k-NN) is
combined with that data-free prior and overruled by it when it cannot tell the leaders apart:

- fewer than ``MIN_CANDIDATES`` candidates: ordered by ImageNet top-1;
- otherwise by the mean of each candidate's three ranks (LogME, k-NN, top-1), unless the leader's
  bootstrap intervals overlap the runner-up's on both scores: then by top-1 again.

A network without ImageNet weights has no top-1: in that rank, and when ordering by top-1, it
comes after every network that has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.analysis.record import RankedBackbone
from core.analysis.scores import Separability

MIN_CANDIDATES = 4


@dataclass(frozen=True)
class Ranked:
    """One candidate's scores on the sample, and how fast it ran here."""

    label: str
    backbone: str
    pretrained: bool
    top1: float | None
    scores: Separability
    images_per_s: float

    def to_record(self) -> RankedBackbone:
        return RankedBackbone(
            name=self.label,
            backbone=self.backbone,
            pretrained=self.pretrained,
            imagenet_top1=self.top1,
            logme=self.scores.logme.to_record(),
            knn=self.scores.knn.to_record(),
            images_per_s=round(self.images_per_s, 1),
        )


@dataclass(frozen=True)
class Ranking:
    entries: tuple[Ranked, ...]  # best first
    by_evidence: bool  # False: ordered by ImageNet top-1
    note: str

    @property
    def best(self) -> Ranked:
        return self.entries[0]


def rank(candidates: list[Ranked]) -> Ranking:
    """Order ``candidates`` by the rule in this module's docstring, saying which rule decided."""
    by_top1 = sorted(candidates, key=_prior_key)
    if len(candidates) < MIN_CANDIDATES:
        note = (
            f"{len(candidates)} candidate(s): too few for the evidence to rank reliably; "
            "ordered by ImageNet top-1"
        )
        return Ranking(tuple(by_top1), False, note)
    logme_rank = _ranks(candidates, lambda r: r.scores.logme.value)
    knn_rank = _ranks(candidates, lambda r: r.scores.knn.value)
    ranks = {id(c): logme_rank[id(c)] + knn_rank[id(c)] + by_top1.index(c) for c in candidates}
    combined = sorted(candidates, key=lambda c: (ranks[id(c)], _prior_key(c)))
    leader, runner_up = combined[0], combined[1]
    if leader.scores.logme.overlaps(runner_up.scores.logme) and leader.scores.knn.overlaps(
        runner_up.scores.knn
    ):
        note = (
            f"the evidence does not separate {leader.label} and {runner_up.label}; ordered by ImageNet top-1"
        )
        return Ranking(tuple(by_top1), False, note)
    return Ranking(
        tuple(combined), True, "ordered by the mean rank of LogME, k-NN accuracy and ImageNet top-1"
    )


def _prior_key(candidate: Ranked) -> tuple[bool, float, float]:
    """Top-1 descending, networks without one last, LogME breaking ties."""
    return (candidate.top1 is None, -(candidate.top1 or 0.0), -candidate.scores.logme.value)


def _ranks(candidates: list[Ranked], value: Any) -> dict[int, int]:
    ordered = sorted(candidates, key=value, reverse=True)
    return {id(c): ordered.index(c) for c in candidates}
