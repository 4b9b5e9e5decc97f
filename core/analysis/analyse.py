"""The whole analysis of a data set: a sample, one pass per backbone, and advice from the numbers.

Seconds, not minutes: a seeded, class-stratified sample (200 images by default) is decoded once
per input size, every candidate backbone runs over it once (cheapest first, within a time
budget), and everything after that works on pooled features. The reference backbone
(EfficientNet-Lite0) always runs, since the similarity thresholds are its own.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from core.advice.cases import Advice, case_for, recommend
from core.analysis.cut import CutChoice, choose_cut
from core.analysis.probe import Candidate, Probe, probe
from core.analysis.ranking import Ranked, Ranking, rank
from core.analysis.scores import separability
from core.analysis.similarity import REFERENCE_BACKBONE, Similarity, measure
from core.data import Dataset, ImageCache, Sample
from core.errors import TransferLabError
from core.models.backbones import Backbone, catalog, resolve
from core.training.device import accelerator
from core.training.events import Emit, PhaseMeter, PhaseStarted, RunWarning

DEFAULT_SAMPLE = 200
DEFAULT_BUDGET_S = 300.0  # no further backbone starts once the analysis has run this long


class AnalysisError(TransferLabError, ValueError):
    """The analysis cannot run as asked (no usable backbone, too few images)."""


@dataclass(frozen=True)
class AnalysisPlan:
    """What to analyse with. No backbones named: every one whose weights are on this machine."""

    backbones: tuple[str, ...] = ()
    controls: tuple[str, ...] = ()  # backbones also scored with random weights (a sanity check)
    sample: int = DEFAULT_SAMPLE
    seed: int = 0
    budget_s: float = DEFAULT_BUDGET_S
    device: str = "auto"
    precision: str = "auto"


@dataclass(frozen=True)
class Analysis:
    """The measured advice and every number behind it."""

    dataset: dict[str, Any]
    sample_size: int
    similarity: Similarity
    ranking: Ranking
    cut: CutChoice
    advice: Advice
    skipped: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)  # what ran each backbone's pass

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "sample": self.sample_size,
            "similarity": round(self.similarity.score, 3),
            "verdict": self.similarity.verdict,
            "evidence": self.similarity.evidence,
            "recommended_case": self.advice.case,
            "advice": self.advice.to_dict(),
            "backbone": self.ranking.best.backbone,
            "cut": self.cut.best.path,
            "cut_note": self.cut.note,
            "backbone_ranking": [entry.to_dict() for entry in self.ranking.entries],
            "ranking_note": self.ranking.note,
            "ranked_by_evidence": self.ranking.by_evidence,
            "stage_scores": [stage.to_dict() for stage in self.cut.stages],
            "skipped": list(self.skipped),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "runtimes": self.runtimes,
        }


def analyse(dataset: Dataset, plan: AnalysisPlan, emit: Emit = lambda event: None) -> Analysis:
    """Measure ``dataset`` and advise on it; ``emit`` hears phases, progress and warnings."""
    clock = _Clock()
    samples = stratified_sample(dataset.train + dataset.val, plan.sample, plan.seed)
    labels = torch.tensor([s.label for s in samples])
    classes = len(dataset.classes)
    candidates = _candidates(plan)
    accel = accelerator(plan.device, plan.precision)

    caches = _decoded(samples, candidates, emit)
    clock.lap("decoding")
    passes, skipped = _passes(candidates, caches, accel, plan.budget_s, emit)
    clock.lap("features")

    emit(PhaseStarted(phase="scoring"))
    by_label = {p.candidate.label: p for p in passes}
    reference = by_label[REFERENCE_BACKBONE]
    similarity = measure(reference.layer_shifts, reference.logits, REFERENCE_BACKBONE)
    ranking = rank([_scored(p, labels, classes, plan.seed) for p in passes if p.candidate.ranked])
    clock.lap("ranking")
    chosen = by_label[next(entry.label for entry in ranking.entries if entry.pretrained)]
    backbone = chosen.candidate.backbone
    cut = choose_cut(backbone.name, backbone.stage_facts(), chosen.stages, labels, classes, seed=plan.seed)
    clock.lap("cut")
    for reason in skipped:
        emit(RunWarning(message=reason))
    return Analysis(
        dataset=_summary(dataset),
        sample_size=len(samples),
        similarity=similarity,
        ranking=ranking,
        cut=cut,
        advice=measured_advice(dataset, similarity),
        skipped=tuple(skipped),
        seconds=clock.laps,
        runtimes={p.candidate.label: p.runtime.to_dict() for p in passes if p.runtime is not None},
    )


def measured_advice(dataset: Dataset, similarity: Similarity) -> Advice:
    """The matrix's case for the data set's size and the measured similarity; a score near a
    verdict's threshold names the neighbouring case as the alternative."""
    images = dataset.report.num_images
    advice = recommend(images, len(dataset.classes), similarity.verdict)
    alternatives = set(advice.alternatives)
    if similarity.near_boundary and similarity.verdict != "unsure":
        other = "different" if similarity.verdict == "similar" else "similar"
        alternatives.add(case_for(advice.size, other).number)
    return replace(advice, alternatives=sorted(alternatives), evidence=similarity.evidence)


def stratified_sample(samples: list[Sample], size: int, seed: int) -> list[Sample]:
    """``size`` images drawn per class in proportion to the class (each class at least two, or
    all it has), the same for the same seed."""
    if size < 2:
        raise AnalysisError(f"the sample must have at least 2 images, not {size}")
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_class[sample.label].append(sample)
    rng = random.Random(seed)
    share = min(1.0, size / max(len(samples), 1))
    drawn: list[Sample] = []
    for label in sorted(by_class):
        members = by_class[label]
        count = min(len(members), max(2, round(share * len(members))))
        drawn += rng.sample(members, count)
    return drawn


def _candidates(plan: AnalysisPlan) -> list[Candidate]:
    """Named backbones, or every one with weights here; the reference always; cheapest first."""
    names = plan.backbones or tuple(b.name for b in catalog() if b.weights.on_disk())
    backbones = [resolve(name) for name in dict.fromkeys((*names, REFERENCE_BACKBONE))]
    missing = [b.name for b in backbones if not b.weights.on_disk()]
    if missing:
        raise AnalysisError(
            f"no ImageNet weights on this machine for {', '.join(missing)}; fetch them first "
            f"(python -m core fetch-weights {missing[0]}) or leave them out"
        )
    candidates = [Candidate(b, ranked=b.name in names) for b in backbones]
    candidates += [Candidate(resolve(name), pretrained=False) for name in plan.controls]
    return sorted(candidates, key=lambda c: (_cost(c.backbone), c.label))


def _scored(found: Probe, labels: torch.Tensor, classes: int, seed: int) -> Ranked:
    candidate = found.candidate
    return Ranked(
        label=candidate.label,
        backbone=candidate.backbone.name,
        pretrained=candidate.pretrained,
        top1=candidate.top1,
        scores=separability(found.features, labels, classes, seed=seed),
        images_per_s=found.images_per_s,
    )


def _cost(backbone: Backbone) -> float:
    return backbone.size[1] or float("inf")


def _decoded(samples: list[Sample], candidates: list[Candidate], emit: Emit) -> dict[tuple, ImageCache]:
    """The sample decoded once per resize and interpolation the candidates need."""
    keys = list(dict.fromkeys((c.preprocess.resize, c.preprocess.interpolation) for c in candidates))
    meter = PhaseMeter(emit, "decoding", len(samples) * len(keys))
    return {key: ImageCache(samples, key[0], interpolation=key[1], progress=meter.part()) for key in keys}


def _passes(
    candidates: list[Candidate],
    caches: dict[tuple, ImageCache],
    accel: Any,
    budget_s: float,
    emit: Emit,
) -> tuple[list[Probe], list[str]]:
    """One pass per candidate until the budget is spent (the reference is never skipped)."""
    started = time.perf_counter()
    size = len(next(iter(caches.values())))
    meter = PhaseMeter(emit, "features", size * len(candidates))
    passes, skipped = [], []
    for candidate in candidates:
        elapsed = time.perf_counter() - started
        if elapsed > budget_s and candidate.label != REFERENCE_BACKBONE:
            skipped.append(f"{candidate.label} not scored: the {budget_s:.0f} s time budget was spent")
            meter.part()(size, size)
            continue
        cache = caches[(candidate.preprocess.resize, candidate.preprocess.interpolation)]
        # Only the reference's BatchNorm statistics measure the shift (the thresholds are its own).
        measure_shift = candidate.label == REFERENCE_BACKBONE
        passes.append(probe(candidate, cache, accel, moments=measure_shift, progress=meter.part()))
    return passes, skipped


def _summary(dataset: Dataset) -> dict[str, Any]:
    report = dataset.report
    return {
        "name": report.source.get("name", ""),
        "sha256": report.source.get("sha256", ""),
        "images": report.num_images,
        "classes": len(dataset.classes),
        "images_per_class": round(report.num_images / max(len(dataset.classes), 1), 1),
    }


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now
