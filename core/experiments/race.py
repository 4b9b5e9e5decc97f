"""A race of the cases, to check the advice on the user's own data.

Cases 1, 2 (at the suggested cut) and 3 train for a few epochs each as ordinary queued runs, on
the same data and the same seeds. Each case runs ``REPEATS`` times with consecutive seeds; where
the data brings no ``val/`` folder the seed also draws the validation split, so the repeats are
a repeated hold-out estimate. A case's score is its mean accuracy, on the test split when the
data has one, else on validation; the leader wins unless the gap to the runner-up is within the
spread of either one's repeats, which is called a tie. A race is a small record under
``races/`` naming its runs, so a page can follow it after a reload.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core import jobs, storage
from core.access import LOCAL, LOCAL_OWNER, Viewer
from core.jobs.admission import admitted
from core.jobs.run import Run, RunState
from core.limits import Limits

RACE_CASES = (1, 2, 3)
REPEATS = 2
POLL_S = 1.0


@dataclass(frozen=True)
class Lane:
    case: int
    seed: int
    run_id: str


@dataclass(frozen=True)
class Race:
    race_id: str
    data: str
    recommended: int
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
        if not data or not viewer.may_see(owner):
            return None
        lanes = tuple(Lane(**lane) for lane in data["lanes"])
        return cls(data["race_id"], data["data"], int(data["recommended"]), lanes, owner)


@dataclass(frozen=True)
class LaneResult:
    lane: Lane
    state: RunState
    accuracy: float | None  # on the split the race is judged on, once the run is done
    seconds: float | None


@dataclass(frozen=True)
class CaseResult:
    case: int
    accuracies: tuple[float, ...]
    seconds: float

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def spread(self) -> float:
        return max(self.accuracies) - min(self.accuracies)


@dataclass(frozen=True)
class Standing:
    """Where a race stands: every lane, and once all are done, the winner (None for a tie)."""

    race: Race
    lanes: tuple[LaneResult, ...]
    cases: tuple[CaseResult, ...]  # best first, cases with a finished lane only
    judged_on: str  # "test" or "validation"

    @property
    def finished(self) -> bool:
        return all(RunState(lane.state).final for lane in self.lanes)

    @property
    def tied(self) -> bool:
        if len(self.cases) < 2:
            return False
        leader, runner_up = self.cases[0], self.cases[1]
        return leader.mean - runner_up.mean <= max(leader.spread, runner_up.spread)

    @property
    def winner(self) -> int | None:
        if not self.finished or not self.cases or self.tied:
            return None
        return self.cases[0].case

    @property
    def verdict(self) -> str:
        if not self.finished:
            done = sum(RunState(lane.state).final for lane in self.lanes)
            return f"{done} of {len(self.lanes)} runs finished"
        if not self.cases:
            return "no run finished: nothing to judge"
        if self.winner is None:
            tied = " and ".join(f"case {c.case}" for c in self.cases[:2])
            return f"a tie between {tied}: the gap is within the spread of {REPEATS} seeds"
        agrees = (
            "as advised"
            if self.winner == self.race.recommended
            else f"the advice was case {self.race.recommended}"
        )
        return f"case {self.winner} wins ({agrees})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "race": {
                str(c.case): {
                    "accuracy": round(c.mean, 4),
                    "accuracies": [round(a, 4) for a in c.accuracies],
                    "seconds": round(c.seconds, 1),
                }
                for c in self.cases
            },
            "race_winner": self.winner,
            "race_tie": self.tied,
            "race_judged_on": self.judged_on,
            "race_verdict": self.verdict,
            "race_runs": [asdict(lane.lane) | {"state": lane.state} for lane in self.lanes],
        }


def start_race(
    data: str | Path,
    *,
    recommended: int,
    backbone: str,
    cut: str | None,
    epochs: int,
    seed: int = 0,
    dataset_name: str | None = None,
    plan: dict[str, Any] | None = None,
    owner: str = LOCAL_OWNER,
    limits: Limits | None = None,
) -> Race:
    """Queue the race's runs (``plan`` adds fields to each, such as an image size) for ``owner``
    and record it. Each lane's plan is resolved before anything is queued: the image size the
    lanes train at is decided here, once (the backbone's own, brought down to the instance's
    ``max_image_size``), and checked like any run's. With ``limits``, the race is admitted whole
    or refused (``LimitExceeded``): its runs count against ``owner``'s jobs like any others."""
    lane_plans = [
        _lane_plan(plan or {}, data=str(data), case=case, backbone=backbone, cut=cut if case == 2 else None,
                   epochs=epochs, seed=seed + repeat, limits=limits)
        for repeat in range(REPEATS) for case in RACE_CASES
    ]  # fmt: skip
    if limits is not None:
        for fields in lane_plans:
            limits.check_plan(fields["epochs"], fields["image_size"])
    lanes = []
    with admitted(owner, limits, runs=len(lane_plans)) if limits else contextlib.nullcontext():
        for fields in lane_plans:
            run_id = jobs.submit(fields, dataset_name=dataset_name, owner=owner)
            lanes.append(Lane(fields["case"], fields["seed"], run_id))
    race_id = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)
    race = Race(race_id, str(data), recommended, tuple(lanes), owner)
    storage.write_json(race.file, asdict(race))
    return race


def _lane_plan(extra: dict[str, Any], *, limits: Limits | None, **fields: Any) -> dict[str, Any]:
    """One lane's plan, resolved (``PlanError`` before anything is queued), at an image size
    within ``limits``: a race has no image size field of its own to clamp."""
    from core.training.plan import Plan

    resolved = Plan.from_dict({**extra, **fields}).resolve()
    cap = limits.max_image_size if limits is not None else None
    if cap is not None and not extra.get("image_size") and resolved.image_size > cap:
        resolved = replace(resolved, image_size=cap).resolve()  # a size the backbone refuses says so
    return resolved.to_dict()


def standing(race: Race) -> Standing:
    """Read every lane's state and result from its run."""
    results, test_seen = [], False
    for lane in race.lanes:
        run = Run(storage.runs_dir() / lane.run_id)
        status = run.status()
        metrics = run.metrics() if status.state is RunState.DONE else None
        accuracy = seconds = None
        if metrics:
            test = metrics.get("test") or {}
            test_seen |= "accuracy" in test
            accuracy = float(test.get("accuracy", metrics.get("best_val_accuracy", 0.0)))
            seconds = (status.finished or 0.0) - (status.started or 0.0)
        results.append(LaneResult(lane, status.state, accuracy, seconds))
    cases = []
    for case in RACE_CASES:
        done = [r for r in results if r.lane.case == case and r.accuracy is not None]
        if done:
            seconds = sum(r.seconds or 0.0 for r in done) / len(done)
            cases.append(CaseResult(case, tuple(r.accuracy for r in done), seconds))
    cases.sort(key=lambda c: (-c.mean, c.seconds))
    return Standing(race, tuple(results), tuple(cases), "test" if test_seen else "validation")


def run_race(race: Race, say: Callable[[str], None] = print) -> Standing:
    """Wait for every run of ``race`` (saying each one's end) and return the final standing."""
    told: set[str] = set()
    while True:
        for lane in race.lanes:
            jobs.reconcile(lane.run_id)
        now = standing(race)
        for result in now.lanes:
            if RunState(result.state).final and result.lane.run_id not in told:
                told.add(result.lane.run_id)
                shown = "-" if result.accuracy is None else f"{result.accuracy:.1%}"
                say(f"case {result.lane.case}, seed {result.lane.seed}: {result.state}, accuracy {shown}")
        if now.finished:
            return now
        time.sleep(POLL_S)
