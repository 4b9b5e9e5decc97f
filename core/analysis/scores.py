"""How well frozen features separate the user's classes: LogME and leave-one-out k-NN, each with
an interval over the sample, so that two backbones (or two stages) whose intervals overlap are
not called different.

The intervals come from subsamples without replacement (a bootstrap with replacement would put
copies of an image in the sample, which makes both scores look better than they are: a copy is
its twin's nearest neighbour and a linear model fits it for free). Each subsample keeps
``SUBSAMPLE`` of every class; the interval is the spread of the subsample scores around their
median, placed on the whole sample's score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.analysis.logme import logme
from core.analysis.record import Interval

NEIGHBOURS = 5
RESAMPLES = 20
SUBSAMPLE = 0.8
INTERVAL = 0.9  # the central share of bootstrap values an interval covers


@dataclass(frozen=True)
class Score:
    """A score on the whole sample and its bootstrap interval."""

    value: float
    low: float
    high: float

    def overlaps(self, other: Score) -> bool:
        return self.low <= other.high and other.low <= self.high

    def to_record(self) -> Interval:
        return Interval(round(self.value, 4), round(self.low, 4), round(self.high, 4))


@dataclass(frozen=True)
class Separability:
    """LogME (log evidence per sample, higher is better) and k-NN accuracy (0..1) of one feature set."""

    logme: Score
    knn: Score


def separability(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Separability:
    """Score ``features`` [n, d] against ``labels`` [n]; intervals from ``resamples`` stratified
    subsamples (``seed`` fixes them)."""
    features = features.double()
    similarity = _cosine(features)
    values = (logme(features, labels, num_classes), knn_accuracy(similarity, labels))
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(resamples):
        idx = _stratified_subsample(labels, generator)
        draws.append(
            (
                logme(features[idx], labels[idx], num_classes),
                knn_accuracy(similarity[idx][:, idx], labels[idx]),
            )
        )
    if not draws:
        return Separability(*(Score(v, v, v) for v in values))
    columns = torch.tensor(draws, dtype=torch.float64).T
    lo, hi = (1 - INTERVAL) / 2, (1 + INTERVAL) / 2
    scores = [
        Score(value, value + float(c.quantile(lo) - c.median()), value + float(c.quantile(hi) - c.median()))
        for value, c in zip(values, columns, strict=True)
    ]
    return Separability(logme=scores[0], knn=scores[1])


def knn_accuracy(similarity: torch.Tensor, labels: torch.Tensor, k: int = NEIGHBOURS) -> float:
    """Leave-one-out accuracy of a ``k``-nearest-neighbour vote under ``similarity`` [n, n]."""
    n = len(labels)
    similarity = similarity.clone()
    similarity.fill_diagonal_(-torch.inf)
    k = max(1, min(k, n - 1))
    nearest_sim, nearest = similarity.topk(k, dim=1)
    votes = torch.zeros(n, int(labels.max()) + 1, dtype=torch.float64)
    # One vote each; the summed similarity, scaled far below one vote, breaks ties.
    votes.scatter_add_(1, labels[nearest], 1 + 1e-6 * nearest_sim)
    return float((votes.argmax(dim=1) == labels).double().mean())


def _cosine(features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of centred features: pooled activations are all positive, and without
    centring every pair looks alike."""
    centred = features - features.mean(dim=0, keepdim=True)
    unit = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


def _stratified_subsample(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``SUBSAMPLE`` of each class (at least two images of it), drawn without replacement."""
    picks = []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        keep = min(len(members), max(2, round(SUBSAMPLE * len(members))))
        picks.append(members[torch.randperm(len(members), generator=generator)[:keep]])
    return torch.cat(picks)
