"""The whole analysis of a data set: a sample, one pass per backbone, and advice from the numbers.

The evidence that predicts accuracy decides: the new layer the engine trains, cross-validated on
each frozen option's features (``core.analysis.cut``), picks case 1 or case 2 and the cut, and a
learning curve on the same features reads the size (``core.analysis.curve``). The BatchNorm shift
explains: how far from ImageNet the images are, and whether in their look or in what they show.

Seconds, not minutes: a seeded, class-stratified sample (200 images by default) is decoded once
per input size, every candidate backbone runs over it once (cheapest first, within a time
budget), and everything after that works on pooled features. The reference backbone
(EfficientNet-Lite0) always runs, since the similarity thresholds are its own.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from core.advice.cases import DEFAULT_DIVIDING_LINE, Advice, SizeReading, case_for, recommend
from core.analysis.curve import LearningCurve, learning_curve, measured_size
from core.analysis.cut import CutChoice, choose_cut
from core.analysis.probe import Candidate, Probe, probe
from core.analysis.ranking import Ranked, Ranking, rank
from core.analysis.record import AnalysisRecord, DatasetSummary, RuntimeReading, Seconds
from core.analysis.scores import separability
from core.analysis.shift import ShiftType, depth_profile, shift_type
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

    dataset: DatasetSummary
    sample_size: int
    similarity: Similarity
    shift: ShiftType
    ranking: Ranking
    cut: CutChoice
    curve: LearningCurve
    size: SizeReading
    advice: Advice
    skipped: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)  # by phase: Seconds' fields
    runtimes: dict[str, RuntimeReading] = field(default_factory=dict)  # what ran each backbone's pass

    def to_record(self) -> AnalysisRecord:
        """The result as stored and read back (``core.analysis.record``)."""
        return AnalysisRecord(
            dataset=self.dataset,
            sample=self.sample_size,
            similarity=round(self.similarity.score, 3),
            verdict=self.advice.similarity,
            evidence=self.similarity.evidence,
            shift_type=self.shift.to_record(),
            recommended_case=self.advice.case,
            advice=self.advice,
            backbone=self.ranking.best.backbone,
            cut=self.cut.best.path,
            cut_note=self.cut.note,
            plan=self.plan_line,
            learning_curve=self.curve.to_record(),
            size=self.size,
            backbone_ranking=tuple(entry.to_record() for entry in self.ranking.entries),
            ranking_note=self.ranking.note,
            ranked_by_evidence=self.ranking.by_evidence,
            stage_scores=tuple(stage.to_record() for stage in self.cut.stages),
            skipped=self.skipped,
            seconds=Seconds(**{phase: round(s, 2) for phase, s in self.seconds.items()}),
            runtimes=self.runtimes,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_record().to_dict()

    @property
    def plan_line(self) -> str:
        """The plan in one line: case, cut and backbone, with the numbers that chose them."""
        advice, backbone = self.advice, self.ranking.best.backbone
        kept = f"cut after stage {self.cut.best.index}" if advice.case == 2 else "the whole body"
        if advice.case in (3, 4):
            kept = "fine-tuned"
        return f"Case {advice.case} ({advice.name}), {backbone}, {kept}: {self.cut.note}; {self.size.reason}."


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
    groups = _content_groups(samples)
    cut = choose_cut(
        backbone.name, backbone.stage_facts(), chosen.stages, chosen.features, labels, classes,
        groups=groups, seed=plan.seed,
    )  # fmt: skip
    clock.lap("cut")
    planned = cut.whole_body if cut.case == 1 else cut.cut_score
    rows = chosen.features if cut.case == 1 else chosen.stages[cut.best.path]
    curve = learning_curve(rows, labels, classes, groups=groups, seed=plan.seed, whole=planned.head)
    size = measured_size(curve, dataset.report.num_images, classes, DEFAULT_DIVIDING_LINE)
    shift = shift_type(depth_profile(reference.layer_tails))
    clock.lap("curve")
    for reason in skipped:
        emit(RunWarning(message=reason))
    return Analysis(
        dataset=_summary(dataset),
        sample_size=len(samples),
        similarity=similarity,
        shift=shift,
        ranking=ranking,
        cut=cut,
        curve=curve,
        size=size,
        advice=measured_advice(dataset, cut, size, shift, similarity),
        skipped=tuple(skipped),
        seconds=clock.laps,
        runtimes={
            p.candidate.label: RuntimeReading.from_dict(p.runtime.to_dict())
            for p in passes
            if p.runtime is not None
        },
    )


def measured_advice(
    dataset: Dataset, cut: CutChoice, size: SizeReading, shift: ShiftType, similarity: Similarity
) -> Advice:
    """The matrix's case from the evidence: its column from the frozen plan (the deepest features
    do as well as any: similar; an earlier stage does better: different), its row from the
    measured size. The rule of thumb's reasoning follows the numbers, not the other way round."""
    column = "similar" if cut.case == 1 else "different"
    advice = recommend(dataset.report.num_images, len(dataset.classes), column, size=size.size)
    alternatives = set(advice.alternatives)
    if cut.case == 1 and cut.gain > 0:  # an earlier stage scored higher, within the spread
        alternatives.add(case_for(advice.size, "different").number)
    evidence = {
        **similarity.evidence.to_dict(),
        "shift_type": shift.to_record().to_dict(),
        "size": size.to_dict(),
        "plan": cut.note,
    }
    found = (
        f"Measured: {cut.note}. {shift.words[0].upper()}{shift.words[1:]}. Size {size.size}: {size.reason}."
    )
    return replace(
        advice,
        alternatives=sorted(alternatives - {advice.case}),
        rationale=f"{found} {advice.rationale}",
        evidence=evidence,
    )


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


def _content_groups(samples: list[Sample]) -> torch.Tensor:
    """A group number per image, shared by identical files, so that no fold holds a copy of an
    image it also trains on."""
    digests: dict[str, int] = {}
    return torch.tensor(
        [digests.setdefault(hashlib.sha256(s.path.read_bytes()).hexdigest(), len(digests)) for s in samples]
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


def _summary(dataset: Dataset) -> DatasetSummary:
    report = dataset.report
    return DatasetSummary(
        name=report.source.get("name", ""),
        sha256=report.source.get("sha256", ""),
        images=report.num_images,
        classes=len(dataset.classes),
        images_per_class=round(report.num_images / max(len(dataset.classes), 1), 1),
    )


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now
