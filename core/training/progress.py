"""A run's progress as a person watching it wants it, folded from its events.

One summary serves the live page, the command line's bar and the tests: which phase the run is
in (queued, preparing, decoding, features, training, exporting, finished), how far that phase
has got, the epochs so far, the rate, the time left, and what went wrong. Like the events, it
imports no torch: the web server folds events too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from core.training.events import (
    BatchEnd,
    DataReady,
    EpochEnd,
    Event,
    PhaseStarted,
    Progress,
    RunDone,
    RunFailed,
    RunWarning,
    StatusChanged,
)

# Later epochs are the better guide to the time left: the first one may also warm up kernels.
RECENT_EPOCHS = 3


@dataclass
class RunProgress:
    """Everything the events of one run have said so far; ``update`` it with each new one."""

    total_epochs: int | None = None  # from the plan, when the reader has it; else from the events
    state: str = "queued"
    phase: str = "queued"
    data: DataReady | None = None
    current: Progress | None = None  # the latest progress of a phase before training
    batch: BatchEnd | None = None  # the latest training batch
    epochs: list[EpochEnd] = field(default_factory=list)
    warnings: list[RunWarning] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    best_val_accuracy: float | None = None
    last_time: float | None = None  # when the latest event was written
    _epoch_started: float | None = None

    @classmethod
    def of(cls, events: Iterable[Event], total_epochs: int | None = None) -> RunProgress:
        progress = cls(total_epochs=total_epochs)
        for event in events:
            progress.update(event)
        return progress

    def update(self, event: Event) -> None:
        self.last_time = event.time
        if isinstance(event, StatusChanged):
            self.state = event.state
            if event.state == "running" and self.phase == "queued":
                self.phase = "preparing"
            elif event.state not in ("queued", "running"):
                self.phase = "finished"
        elif isinstance(event, DataReady):
            self.data = event
        elif isinstance(event, PhaseStarted):
            self.phase, self.current = event.phase, None
            if event.phase == "training":
                self._epoch_started = event.time
        elif isinstance(event, Progress):
            self.phase, self.current = event.phase, event
        elif isinstance(event, BatchEnd):
            if self.phase != "training":
                self.phase, self._epoch_started = "training", self._epoch_started or event.time
            self.batch = event
        elif isinstance(event, EpochEnd):
            self.epochs.append(event)
            self.total_epochs = event.epochs
            self._epoch_started = event.time
        elif isinstance(event, RunWarning):
            self.warnings.append(event)
        elif isinstance(event, RunFailed):
            self.errors.append(event.message)
        elif isinstance(event, RunDone):
            self.best_val_accuracy = event.best_val_accuracy

    @property
    def suggest(self) -> str | None:
        """A remedy a warning offers (``from_scratch``), for the app's button and the CLI."""
        return next((w.suggest for w in reversed(self.warnings) if w.suggest), None)

    @property
    def epoch_fraction(self) -> float:
        """How far the epoch under way has got, 0 to 1."""
        batch = self.batch
        if batch is None or batch.epoch <= len(self.epochs):
            return 0.0
        return min(1.0, batch.step / max(batch.steps, 1))

    @property
    def images_per_s(self) -> float | None:
        """The rate of what runs now: images decoded or embedded per second, or trained on."""
        if self.phase == "training" and self.batch is not None:
            return self.batch.images_per_s
        if self.current is not None:
            return self.current.images_per_s
        return None

    def eta_s(self, now: float) -> float | None:
        """Seconds left in the phase under way (for training: until the last epoch ends), or
        None while there is nothing to go on."""
        if self.phase in ("decoding", "features") and self.current is not None:
            left = _left(self.current.total - self.current.done, self.current.images_per_s)
        elif self.phase == "training" and self.total_epochs:
            left = self._training_left()
        else:
            return None
        if left is None:
            return None
        return max(0.0, left - (now - (self.last_time or now)))

    def _training_left(self) -> float | None:
        recent = [e.seconds for e in self.epochs[-RECENT_EPOCHS:]]
        per_epoch = sum(recent) / len(recent) if recent else None
        remaining_epochs = self.total_epochs - len(self.epochs)
        batch = self.batch
        mid_epoch = batch is not None and batch.epoch > len(self.epochs) and self._epoch_started is not None
        if not mid_epoch:
            return None if per_epoch is None else remaining_epochs * per_epoch
        per_step = max(batch.time - self._epoch_started, 0.0) / max(batch.step, 1)
        per_epoch = per_epoch or per_step * batch.steps
        return (batch.steps - batch.step) * per_step + (remaining_epochs - 1) * per_epoch


def queue_wait(running_left_s: list[float | None], ahead: int, typical_s: float | None) -> float | None:
    """Seconds until a queued run starts: what the runs training now have left, plus a typical
    run's length for each of the ``ahead`` runs waiting before it; None when any part is unknown."""
    parts = [*running_left_s, *([typical_s] * ahead)]
    if not parts or any(part is None for part in parts):
        return None
    return sum(parts)


def _left(count: int, per_s: float) -> float | None:
    return count / per_s if per_s > 0 else None


def duration(seconds: float | None) -> str:
    """``42 s``, ``3.5 min``, ``1.2 h``, ``under a second``: how long, as people say it (``-``
    for not known)."""
    if seconds is None:
        return "-"
    if seconds < 0.5:
        return "under a second"  # never "0 s": something that takes no time needs no estimate
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
