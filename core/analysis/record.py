"""The analysis result as stored: an analysis job's ``result.json``, ``analyze --json``'s object.

One shape for both sides: ``Analysis.to_record`` builds an ``AnalysisRecord`` and writes its
``to_dict``; pages, the command line and the race read it back with ``read_analysis``. The
records are frozen and tolerant, like the run's own (``core.jobs.run.RunStatus``): keys this
version does not know are ignored and missing ones take their defaults, so the results of every
earlier version still read. The numbers are read as stored, never computed again: words and
thresholds are those of the version that measured them.

Torch-free: the web server reads results (the measurement needs torch, its record does not).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from core.advice.cases import Advice, SizeReading
from core.storage import Damaged, read_record

if TYPE_CHECKING:
    from core.training.head import HeadScore

R = TypeVar("R")
# What every reader relies on at the top of a result: a file that breaks it is damaged.
RESULT_FIELDS = {
    "dataset": dict, "sample": int, "verdict": str, "recommended_case": int, "advice": dict,
    "backbone": str, "cut": str, "stage_scores": list, "backbone_ranking": list,
}  # fmt: skip


def _record(cls: type[R], data: Mapping[str, Any], **nested: Callable[[Any], Any]) -> R:
    """``cls`` from the keys of ``data`` it has fields for (others are ignored), each key named in
    ``nested`` read by its function unless it is null."""
    names = {f.name for f in fields(cls)}
    values = {key: value for key, value in data.items() if key in names}
    for name, read in nested.items():
        if values.get(name) is not None:
            values[name] = read(values[name])
    return cls(**values)


def _each(read: Callable[[Any], R]) -> Callable[[list[Any]], tuple[R, ...]]:
    return lambda items: tuple(read(item) for item in items)


@dataclass(frozen=True)
class Interval:
    """A score on the whole sample and the interval around it (LogME, k-NN accuracy)."""

    value: float = 0.0
    low: float = 0.0
    high: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return _record(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class HeldOut(Interval):
    """The new layer's cross-validated accuracy: the mean over ``folds`` folds and its interval."""

    folds: int = 0

    @classmethod
    def of(cls, score: HeadScore) -> HeldOut:
        return cls(round(score.accuracy, 4), round(score.low, 4), round(score.high, 4), len(score.per_fold))

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"folds": self.folds}


@dataclass(frozen=True)
class DatasetSummary:
    name: str = ""
    sha256: str = ""
    images: int = 0
    classes: int = 0
    images_per_class: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSummary:
        return _record(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SimilarityEvidence:
    """How close the images are to ImageNet, by the reference backbone's BatchNorm shift."""

    similarity: float = 0.0
    verdict: str = "unsure"  # the measured answer: similar | unsure | different
    shift_by_depth: tuple[float, ...] = ()  # per quarter of the network, shallow to deep
    deepest_shift: float = 0.0
    top1_probability: float | None = None
    energy: float | None = None
    backbone: str = ""
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimilarityEvidence:
        return _record(cls, data, shift_by_depth=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "similarity": self.similarity,
            "verdict": self.verdict,
            "shift_by_depth": list(self.shift_by_depth),
            "deepest_shift": self.deepest_shift,
            "top1_probability": self.top1_probability,
            "energy": self.energy,
            "backbone": self.backbone,
            "thresholds": dict(self.thresholds),
        }


@dataclass(frozen=True)
class ShiftReading:
    """What kind of shift from ImageNet the profile by depth shows, in numbers and in words."""

    kind: str = "none"  # none | input (the look) | content
    first: float = 0.0
    second: float = 0.0
    deepest: float = 0.0
    spike: float = 0.0
    trend: float = 0.0
    words: str = ""
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShiftReading:
        return _record(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"thresholds": dict(self.thresholds)}


@dataclass(frozen=True)
class CurvePoint:
    fraction: float = 0.0
    images: int = 0
    head_accuracy: HeldOut = field(default_factory=HeldOut)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurvePoint:
        return _record(cls, data, head_accuracy=HeldOut.from_dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "images": self.images,
            "head_accuracy": self.head_accuracy.to_dict(),
        }


@dataclass(frozen=True)
class CurveReading:
    """The learning curve: the new layer on nested shares of the sample, smallest first."""

    points: tuple[CurvePoint, ...] = ()
    per_doubling: float = 0.0
    shape: str = "unknown"  # rising | flat | between | unknown
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurveReading:
        return _record(cls, data, points=_each(CurvePoint.from_dict))

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": [point.to_dict() for point in self.points],
            "per_doubling": self.per_doubling,
            "shape": self.shape,
            "thresholds": dict(self.thresholds),
        }


@dataclass(frozen=True)
class RankedBackbone:
    """One candidate of the ranking: its frozen features' scores and its speed here."""

    name: str = ""  # the candidate's label (a control says it has random weights)
    backbone: str = ""
    pretrained: bool = True
    imagenet_top1: float | None = None
    logme: Interval = field(default_factory=Interval)
    knn: Interval = field(default_factory=Interval)
    images_per_s: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RankedBackbone:
        return _record(cls, data, logme=Interval.from_dict, knn=Interval.from_dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backbone": self.backbone,
            "pretrained": self.pretrained,
            "imagenet_top1": self.imagenet_top1,
            "logme": self.logme.to_dict(),
            "knn": self.knn.to_dict(),
            "images_per_s": self.images_per_s,
        }


@dataclass(frozen=True)
class StageReading:
    """One frozen option scored: a stage (case 2's cut there) or, with no ``index``, the whole
    body (case 1), which has no stage facts."""

    stage: str = ""  # the stage's path, or "whole body"
    index: int | None = None
    case: int = 1
    channels: int | None = None
    side: int | None = None
    params_kept: float | None = None
    head_accuracy: HeldOut | None = None  # None: too few images per class to cross-validate
    logme: Interval = field(default_factory=Interval)
    knn: Interval = field(default_factory=Interval)

    @property
    def whole_body(self) -> bool:
        return self.index is None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageReading:
        return _record(
            cls, data, head_accuracy=HeldOut.from_dict, logme=Interval.from_dict, knn=Interval.from_dict
        )

    def to_dict(self) -> dict[str, Any]:
        facts = {} if self.whole_body else {
            "channels": self.channels, "side": self.side, "params_kept": self.params_kept,
        }  # fmt: skip
        return {
            "stage": self.stage,
            "index": self.index,
            "case": self.case,
            **facts,
            "head_accuracy": None if self.head_accuracy is None else self.head_accuracy.to_dict(),
            "logme": self.logme.to_dict(),
            "knn": self.knn.to_dict(),
        }


@dataclass(frozen=True)
class Seconds:
    """How long each phase of the analysis took."""

    decoding: float = 0.0
    features: float = 0.0
    ranking: float = 0.0
    cut: float = 0.0
    curve: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Seconds:
        return _record(cls, data)

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RuntimeReading:
    """Which runtime ran one backbone's pass, what each candidate measured, and why."""

    runtime: str = "torch"
    reason: str = ""
    images_per_s: Mapping[str, float] = field(default_factory=dict)
    rejected: Mapping[str, str] = field(default_factory=dict)  # candidate -> why it could not run
    threads: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeReading:
        return _record(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "reason": self.reason,
            "images_per_s": dict(self.images_per_s),
            "rejected": dict(self.rejected),
            "threads": self.threads,
        }


@dataclass(frozen=True)
class RaceContender:
    """Where one plan stands in a race of the plans (``core.experiments.race``)."""

    key: str = ""
    label: str = ""
    plan: Mapping[str, Any] = field(default_factory=dict)  # the plan's own fields: case, cut, ...
    advised: bool = False
    frozen: bool = False
    accuracy: float | None = None
    spread: float | None = None
    seconds: float | None = None
    dropped_after: int | None = None  # the epoch after which halving dropped it
    versus_advice: str | None = None  # won | tied | lost; None while racing

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RaceContender:
        return _record(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"plan": dict(self.plan)}


@dataclass(frozen=True)
class RaceLane:
    contender: str = ""
    seed: int = 0
    run_id: str = ""
    state: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RaceLane:
        return _record(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RaceReading:
    """A race's standing, stored beside the analysis it checks under ``race_`` keys."""

    contenders: tuple[RaceContender, ...] = ()
    advised: str = ""
    outcome: str | None = None  # the advised plan's: won | tied | lost, once the race is over
    judged_on: str = "validation"
    summary: str = ""  # in words, how the advised plan fared (or how far the race is)
    runs: tuple[RaceLane, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RaceReading:
        """From a result's ``race_`` keys."""
        unprefixed = {
            key.removeprefix("race_"): value for key, value in data.items() if key.startswith("race_")
        }
        return _record(
            cls, unprefixed, contenders=_each(RaceContender.from_dict), runs=_each(RaceLane.from_dict)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "race_contenders": [contender.to_dict() for contender in self.contenders],
            "race_advised": self.advised,
            "race_outcome": self.outcome,
            "race_judged_on": self.judged_on,
            "race_summary": self.summary,
            "race_runs": [lane.to_dict() for lane in self.runs],
        }


@dataclass(frozen=True)
class AnalysisRecord:
    """The measured advice and every number behind it, as stored: one field per key."""

    dataset: DatasetSummary = field(default_factory=DatasetSummary)
    sample: int = 0  # images analysed
    similarity: float = 0.0
    verdict: str = "unsure"  # the matrix's column the advice took
    evidence: SimilarityEvidence = field(default_factory=SimilarityEvidence)
    shift_type: ShiftReading = field(default_factory=ShiftReading)
    recommended_case: int = 1
    advice: Advice = field(default_factory=lambda: Advice.from_dict({}))
    backbone: str = ""
    cut: str = ""  # case 2's cut, even where the plan keeps the whole body
    cut_note: str = ""
    plan: str = ""  # the plan in one line, with the numbers that chose it
    learning_curve: CurveReading = field(default_factory=CurveReading)
    size: SizeReading = field(default_factory=lambda: SizeReading.from_dict({}))
    backbone_ranking: tuple[RankedBackbone, ...] = ()  # best first
    ranking_note: str = ""
    ranked_by_evidence: bool = False  # False: ordered by ImageNet top-1
    stage_scores: tuple[StageReading, ...] = ()  # shallow to deep, the whole body last
    skipped: tuple[str, ...] = ()
    seconds: Seconds = field(default_factory=Seconds)
    runtimes: Mapping[str, RuntimeReading] = field(default_factory=dict)  # by candidate
    data: str | None = None  # the data set's folder, where a job analysed it
    race: RaceReading | None = None  # the race of the plans, where one checked the advice

    @property
    def planned_stage(self) -> StageReading | None:
        """The frozen option the plan takes: case 2's cut, else the whole body; None for a
        result stored before the options were scored."""
        if not self.stage_scores:
            return None
        wanted = self.cut if self.advice.case == 2 else self.stage_scores[-1].stage
        return next((stage for stage in self.stage_scores if stage.stage == wanted), None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisRecord:
        record = _record(
            cls,
            {key: value for key, value in data.items() if key != "race"},  # stored as race_ keys
            dataset=DatasetSummary.from_dict,
            evidence=SimilarityEvidence.from_dict,
            shift_type=ShiftReading.from_dict,
            advice=Advice.from_dict,
            learning_curve=CurveReading.from_dict,
            size=SizeReading.from_dict,
            backbone_ranking=_each(RankedBackbone.from_dict),
            stage_scores=_each(StageReading.from_dict),
            skipped=tuple,
            seconds=Seconds.from_dict,
            runtimes=lambda runtimes: {name: RuntimeReading.from_dict(r) for name, r in runtimes.items()},
        )
        if any(key.startswith("race_") for key in data):
            return replace(record, race=RaceReading.from_dict(data))
        return record

    def to_dict(self) -> dict[str, Any]:
        """The result's JSON object: the data set's folder and the race only where there are."""
        stored = {
            "dataset": self.dataset.to_dict(),
            "sample": self.sample,
            "similarity": self.similarity,
            "verdict": self.verdict,
            "evidence": self.evidence.to_dict(),
            "shift_type": self.shift_type.to_dict(),
            "recommended_case": self.recommended_case,
            "advice": self.advice.to_dict(),
            "backbone": self.backbone,
            "cut": self.cut,
            "cut_note": self.cut_note,
            "plan": self.plan,
            "learning_curve": self.learning_curve.to_dict(),
            "size": self.size.to_dict(),
            "backbone_ranking": [entry.to_dict() for entry in self.backbone_ranking],
            "ranking_note": self.ranking_note,
            "ranked_by_evidence": self.ranked_by_evidence,
            "stage_scores": [stage.to_dict() for stage in self.stage_scores],
            "skipped": list(self.skipped),
            "seconds": self.seconds.to_dict(),
            "runtimes": {name: runtime.to_dict() for name, runtime in self.runtimes.items()},
        }
        if self.data is not None:
            stored["data"] = self.data
        return stored | (self.race.to_dict() if self.race else {})


def read_analysis(path: Path) -> AnalysisRecord | Damaged | None:
    """The analysis result in ``path``: None when there is none, ``Damaged`` saying what is wrong
    when the file is not one."""
    stored = read_record(path, None, RESULT_FIELDS)
    if stored is None or isinstance(stored, Damaged):
        return stored
    try:
        return AnalysisRecord.from_dict(stored)
    except (AttributeError, TypeError, ValueError) as exc:  # a nested value of another shape
        return Damaged(Path(path), f"not an analysis result ({exc})")
