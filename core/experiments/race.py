"""A race of the plans, to check the advice on the user's own data, fast.

The contenders: both frozen options (case 1, and case 2 at the analysis's cut), full fine-tuning
(case 3), the surgical fine-tune (case 3 through the first stage only) when the shift is in the
images' look, and training from scratch (case 4) when the data is large or advised. A frozen
option costs no run: the analysis already fitted its new layer on cached features, and its
cross-validated accuracy (the interval over the folds) is its score. The fine-tunes are
ordinary queued runs, ``REPEATS`` seeds each, at a reduced image size; where the data has no
``val/`` folder the seed also draws the validation split, so the repeats are a repeated hold-out
estimate. A fine-tune's score is its mean accuracy, on the test split when the data has one,
else on validation, and its spread ``INTERVAL_ERRORS`` standard errors of that mean, never
narrower than the binomial error of the images it was measured on (``resolution``).

One rule decides everything: a score beats another when the gap exceeds the larger of their
spreads; otherwise they tie. It drops fine-tunes early (successive halving: after an epoch that
every fine-tune still racing has reached in at least one run, one that the leader beats is
cancelled) and it judges each contender against the advised plan: won, tied or lost.

A race is a small record under ``races/`` naming its contenders and runs, so a page can follow
it after a reload; dropping is read back from the runs (a dropped contender's runs are cancelled).
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core import jobs, storage
from core.access import LOCAL, LOCAL_OWNER, Viewer
from core.analysis.record import AnalysisRecord, HeldOut, RaceContender, RaceLane, RaceReading, StageReading
from core.jobs.admission import admitted
from core.jobs.run import Run, RunState
from core.limits import Limits
from core.models.catalog import card
from core.training.events import DataReady, EpochEnd, read_events
from core.training.plan import Plan

REPEATS = 2
INTERVAL_ERRORS = 2.0  # as the frozen options' intervals (core.training.head)
SIZE_FACTOR = 2  # the fine-tunes train at the backbone's image size divided by this
POLL_S = 1.0
OUTCOMES = ("won", "tied", "lost")


@dataclass(frozen=True)
class Score:
    """An accuracy and its spread: half the width of its interval."""

    accuracy: float
    spread: float

    @classmethod
    def of(cls, values: tuple[float, ...], images: int | None = None) -> Score:
        """The mean of repeated measurements, ``INTERVAL_ERRORS`` standard errors either side,
        and never narrower than ``images`` images a measurement allow (``resolution``)."""
        mean = sum(values) / len(values)
        spread = 0.0
        if len(values) >= 2:
            variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            spread = INTERVAL_ERRORS * math.sqrt(variance / len(values))
        return cls(mean, max(spread, resolution(mean, images * len(values) if images else None)))

    def beats(self, other: Score) -> bool:
        """Ahead by more than the larger spread: the race's one rule."""
        return self.accuracy - other.accuracy > max(self.spread, other.spread)


def resolution(accuracy: float, images: int | None) -> float:
    """``INTERVAL_ERRORS`` binomial standard errors of an accuracy measured on ``images`` images,
    by Agresti and Coull's adjusted proportion so that 0% and 100% keep a width. Two seeds that
    agree, or five folds all at 100%, have no spread between them, yet on 40 images one image is
    2.5 points: without this floor halving dropped a fine-tune one image behind."""
    if not images:
        return 0.0
    adjusted = (accuracy * images + 2) / (images + 4)
    return INTERVAL_ERRORS * math.sqrt(adjusted * (1 - adjusted) / (images + 4))


def outcome(score: Score, rivals: list[Score]) -> str:
    """``won`` when ``score`` beats every rival, ``lost`` when any beats it, else ``tied``."""
    if any(rival.beats(score) for rival in rivals):
        return "lost"
    return "won" if all(score.beats(rival) for rival in rivals) else "tied"


@dataclass(frozen=True)
class Contender:
    """One plan in the race: ``fields`` are its plan's own (case, cut, tune_through); a frozen
    option carries its ``score`` and ``seconds`` from the analysis and runs nothing."""

    key: str
    label: str
    fields: dict[str, Any]
    score: Score | None = None
    seconds: float | None = None

    @property
    def frozen(self) -> bool:
        return self.score is not None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Contender:
        score = Score(**data["score"]) if data.get("score") else None
        return cls(data["key"], data["label"], dict(data["fields"]), score, data.get("seconds"))


@dataclass(frozen=True)
class Lane:
    contender: str
    seed: int
    run_id: str


@dataclass(frozen=True)
class Race:
    race_id: str
    data: str
    advised: str  # the key of the contender the analysis advised
    contenders: tuple[Contender, ...]
    lanes: tuple[Lane, ...]
    owner: str = LOCAL_OWNER

    @property
    def file(self) -> Path:
        return storage.races_dir() / f"{self.race_id}.json"

    @classmethod
    def load(cls, race_id: str, viewer: Viewer = LOCAL) -> Race | None:
        """The race with this id, or None: also for another owner's race, which ``viewer`` may
        not see (an id that could not be one never reaches the disk)."""
        if not (race_id.isalnum() and len(race_id) <= 32):
            return None
        data = storage.read_json(storage.races_dir() / f"{race_id}.json")
        owner = (data or {}).get("owner", LOCAL_OWNER)
        if not data or not viewer.may_see(owner) or "contenders" not in data:
            return None  # nor a race of the cases from before contenders (it cannot be judged)
        contenders = tuple(Contender.from_dict(c) for c in data["contenders"])
        lanes = tuple(Lane(**lane) for lane in data["lanes"])
        return cls(data["race_id"], data["data"], data["advised"], contenders, lanes, owner)


def contenders(analysis: AnalysisRecord) -> tuple[tuple[Contender, ...], str]:
    """The race's contenders for an analysis, and the advised one's key."""
    advised_case = analysis.recommended_case
    *_, whole = analysis.stage_scores
    cut = next(s for s in analysis.stage_scores if s.stage == analysis.cut)
    each_fit = analysis.seconds.cut / len(analysis.stage_scores)
    entries = [
        _frozen("case1", "case 1, the whole body", {"case": 1}, whole, each_fit, analysis.sample),
        _frozen(
            "case2",
            f"case 2, cut after {cut.stage}",
            {"case": 2, "cut": cut.stage},
            cut,
            each_fit,
            analysis.sample,
        ),
        Contender("case3", "case 3, fine-tune all", {"case": 3}),
    ]
    if analysis.shift_type.kind == "input":
        first = card(analysis.backbone).stages[0]
        entries.append(
            Contender("surgical", f"case 3, tune through {first}", {"case": 3, "tune_through": first})
        )
    if analysis.size.size == "large" or advised_case == 4:
        entries.append(Contender("case4", "case 4, train everything", {"case": 4}))
    return tuple(entries), f"case{advised_case}"


def _frozen(
    key: str, label: str, fields: dict, stage: StageReading, seconds: float, images: int
) -> Contender:
    """A frozen option scored by the analysis's cross-validated fit on its ``images`` images."""
    head = stage.head_accuracy or HeldOut()
    spread = max(head.high - head.value, head.value - head.low, resolution(head.value, images))
    return Contender(key, label, fields, Score(head.value, spread), seconds)


def start_race(
    analysis: AnalysisRecord,
    data: str | Path,
    *,
    epochs: int,
    seed: int = 0,
    image_size: int | None = None,
    owner: str = LOCAL_OWNER,
    limits: Limits | None = None,
) -> Race:
    """Queue the fine-tunes' runs for ``owner`` and record the race of ``analysis``'s plans.

    Each lane's plan is resolved before anything is queued, at ``image_size`` or else the
    backbone's own reduced by ``SIZE_FACTOR`` (within the instance's ``max_image_size``), and
    checked like any run's. Seeds go round by round, so that a lone worker finishes every
    fine-tune's first run before any second and halving can drop a contender's later runs. With
    ``limits``, the race is admitted whole or refused (``LimitExceeded``)."""
    entries, advised = contenders(analysis)
    common = {"data": str(data), "backbone": analysis.backbone, "epochs": epochs}
    lane_plans = [
        (c.key, _lane_plan({**common, **c.fields, "seed": seed + repeat}, image_size, limits))
        for repeat in range(REPEATS) for c in entries if not c.frozen
    ]  # fmt: skip
    if limits is not None:
        for _, fields in lane_plans:
            limits.check_plan(fields["epochs"], fields["image_size"])
    lanes = []
    name = analysis.dataset.name
    with admitted(owner, limits, runs=len(lane_plans)) if limits else contextlib.nullcontext():
        for key, fields in lane_plans:
            lanes.append(Lane(key, fields["seed"], jobs.submit(fields, dataset_name=name, owner=owner)))
    race_id = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)
    race = Race(race_id, str(data), advised, entries, tuple(lanes), owner)
    storage.write_json(race.file, asdict(race))
    return race


def _lane_plan(fields: dict[str, Any], image_size: int | None, limits: Limits | None) -> dict[str, Any]:
    """One lane's plan, resolved (``PlanError`` before anything is queued), at the race's size."""
    resolved = Plan.from_dict(fields).resolve()
    if image_size is None:
        min_size, exact = card(resolved.backbone).input_size_rule(resolved.case)
        image_size = exact or max(min_size, resolved.image_size // SIZE_FACTOR)
        if limits is not None and limits.max_image_size is not None:
            image_size = min(image_size, limits.max_image_size)
    return replace(resolved, image_size=image_size).resolve().to_dict()  # a size refused says so


@dataclass(frozen=True)
class LaneResult:
    lane: Lane
    state: RunState
    accuracy: float | None  # on the split the race is judged on, once the run is done
    seconds: float | None
    val_by_epoch: tuple[float, ...] = ()  # validation accuracy after each epoch so far
    images: int | None = None  # in the split ``accuracy`` is measured on
    val_images: int | None = None  # in the validation split, which ``val_by_epoch`` is measured on


@dataclass(frozen=True)
class Entry:
    """Where one contender stands: its score (None until a run finishes), the time one of its
    runs took (or its head fit's), whether halving dropped it, and how it fares against the
    advice once the race is over."""

    contender: Contender
    score: Score | None
    seconds: float | None
    dropped_after: int | None = None  # the epoch after which halving dropped it
    versus_advice: str | None = None  # won, tied or lost; None while racing

    def to_record(self, advised: str) -> RaceContender:
        c, s = self.contender, self.score
        return RaceContender(
            key=c.key,
            label=c.label,
            plan=c.fields,
            advised=c.key == advised,
            frozen=c.frozen,
            accuracy=None if s is None else round(s.accuracy, 4),
            spread=None if s is None else round(s.spread, 4),
            seconds=None if self.seconds is None else round(self.seconds, 1),
            dropped_after=self.dropped_after,
            versus_advice=self.versus_advice,
        )


@dataclass(frozen=True)
class Standing:
    """Where a race stands: every lane, every contender, and once all runs are final, how the
    advised plan fared."""

    race: Race
    lanes: tuple[LaneResult, ...]
    entries: tuple[Entry, ...]
    judged_on: str  # the fine-tunes': "test" or "validation"

    @property
    def finished(self) -> bool:
        return all(lane.state.final for lane in self.lanes)

    @property
    def advised(self) -> Entry:
        return next(e for e in self.entries if e.contender.key == self.race.advised)

    @property
    def summary(self) -> str:
        if not self.finished:
            done = sum(lane.state.final for lane in self.lanes)
            return f"{done} of {len(self.lanes)} runs finished"
        advised = self.advised
        if advised.dropped_after is not None:
            return f"the advised plan ({advised.contender.label}) was dropped after epoch {advised.dropped_after}"
        if advised.score is None:
            return f"the advised plan ({advised.contender.label}) has no finished run: nothing to judge"
        others = [e for e in self.entries if e is not advised and e.score is not None]
        if advised.versus_advice == "lost":
            beaten_by = ", ".join(e.contender.label for e in others if e.versus_advice == "won")
            return f"the advised plan ({advised.contender.label}) lost to {beaten_by}"
        if advised.versus_advice == "tied":
            tied = ", ".join(e.contender.label for e in others if e.versus_advice == "tied")
            return (
                f"the advised plan ({advised.contender.label}) tied with {tied}: the gap is within the spread"
            )
        return f"the advised plan ({advised.contender.label}) won"

    def to_record(self) -> RaceReading:
        """The standing as an analysis result stores it (``AnalysisRecord.race``)."""
        return RaceReading(
            contenders=tuple(e.to_record(self.race.advised) for e in self.entries),
            advised=self.race.advised,
            outcome=self.advised.versus_advice if self.finished else None,
            judged_on=self.judged_on,
            summary=self.summary,
            runs=tuple(RaceLane(**asdict(lane.lane), state=lane.state) for lane in self.lanes),
        )


def judged(race: Race, lanes: tuple[LaneResult, ...], judged_on: str = "validation") -> Standing:
    """The standing of ``lanes``: each contender scored, and once all are final, judged against
    the advised plan by the race's one rule (a dropped contender lost)."""
    entries = [_entry(c, [r for r in lanes if r.lane.contender == c.key]) for c in race.contenders]
    if all(r.state.final for r in lanes):
        advised = next(e for e in entries if e.contender.key == race.advised)
        entries = [_versus(e, advised, entries) for e in entries]
    return Standing(race, lanes, tuple(entries), judged_on)


def _entry(contender: Contender, lanes: list[LaneResult]) -> Entry:
    if contender.frozen:
        return Entry(contender, contender.score, contender.seconds)
    spent = [r.seconds for r in lanes if r.seconds is not None]
    seconds = sum(spent) / len(spent) if spent else None
    if any(r.state is RunState.CANCELLED for r in lanes):
        epoch = min((len(r.val_by_epoch) for r in lanes if r.val_by_epoch), default=0)
        reached = tuple(r.val_by_epoch[epoch - 1] for r in lanes if epoch and len(r.val_by_epoch) >= epoch)
        score = Score.of(reached, _fewest(r.val_images for r in lanes)) if reached else None
        return Entry(contender, score, seconds, dropped_after=epoch)
    done = tuple(r.accuracy for r in lanes if r.accuracy is not None)
    return Entry(contender, Score.of(done, _fewest(r.images for r in lanes)) if done else None, seconds)


def _fewest(counts: Iterable[int | None]) -> int | None:
    """The smallest known image count: the widest floor the runs' measurements allow."""
    return min((c for c in counts if c), default=None)


def _versus(entry: Entry, advised: Entry, entries: list[Entry]) -> Entry:
    if entry.dropped_after is not None:
        return replace(entry, versus_advice="lost")
    if entry.score is None or advised.score is None:
        return entry
    if entry is advised:
        rivals = [
            e.score for e in entries if e is not advised and e.score is not None and e.dropped_after is None
        ]
        return replace(entry, versus_advice=outcome(entry.score, rivals))
    return replace(entry, versus_advice=outcome(entry.score, [advised.score]))


def to_drop(standing: Standing) -> list[str]:
    """Successive halving: the fine-tunes still racing that the leader beats after the latest
    epoch every one of them has reached in at least one run (their keys)."""
    racing = [e.contender.key for e in standing.entries if not e.contender.frozen and e.dropped_after is None]
    curves = {key: [r.val_by_epoch for r in standing.lanes if r.lane.contender == key] for key in racing}
    reached = {key: max((len(c) for c in curves[key]), default=0) for key in racing}
    epoch = min(reached.values(), default=0)
    if len(racing) < 2 or epoch == 0:
        return []
    images = {key: _fewest(r.val_images for r in standing.lanes if r.lane.contender == key) for key in racing}
    scores = {
        key: Score.of(tuple(c[epoch - 1] for c in curves[key] if len(c) >= epoch), images[key])
        for key in racing
    }
    leader = max(scores.values(), key=lambda s: s.accuracy)
    return [key for key, score in scores.items() if leader.beats(score)]


def standing(race: Race) -> Standing:
    """Read every lane's state, curve and result from its run."""
    results, test_seen = [], False
    for lane in race.lanes:
        run = Run(storage.runs_dir() / lane.run_id)
        status = run.status()
        metrics = run.metrics() if status.state is RunState.DONE else None
        events = read_events(run.directory)
        curve = tuple(e.val_accuracy for e in events if isinstance(e, EpochEnd))
        ready = next((e for e in events if isinstance(e, DataReady)), None)
        accuracy, on_test = None, False
        if metrics:
            test = metrics.get("test") or {}
            on_test = "accuracy" in test
            test_seen |= on_test
            accuracy = float(test.get("accuracy", metrics.get("best_val_accuracy", 0.0)))
        seconds = None
        if status.started and status.finished:
            seconds = float(status.finished - status.started)
        val_images = ready.val if ready else None
        images = (ready.test if on_test and ready else None) or val_images
        results.append(LaneResult(lane, status.state, accuracy, seconds, curve, images, val_images))
    return judged(race, tuple(results), "test" if test_seen else "validation")


def advance(race: Race, viewer: Viewer = LOCAL) -> Standing:
    """Reconcile the race's runs, cancel the contenders halving drops, and say where it stands."""
    for lane in race.lanes:
        jobs.reconcile(lane.run_id, viewer)
    now = standing(race)
    dropped = set(to_drop(now))
    for lane in now.lanes:
        if lane.lane.contender in dropped and not lane.state.final:
            jobs.cancel(lane.lane.run_id, viewer)
    return standing(race) if dropped else now


def run_race(race: Race, say: Callable[[str], None] = print) -> Standing:
    """Follow ``race`` to its end (saying each run's end and each drop) and return the standing."""
    told: set[str] = set()
    while True:
        now = advance(race)
        for result in now.lanes:
            if result.state.final and result.lane.run_id not in told:
                told.add(result.lane.run_id)
                shown = "-" if result.accuracy is None else f"{result.accuracy:.1%}"
                say(f"{result.lane.contender}, seed {result.lane.seed}: {result.state}, accuracy {shown}")
        if now.finished:
            return now
        time.sleep(POLL_S)
