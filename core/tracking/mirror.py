"""What every tracker shares: the configuration, the run being mirrored, and the guard that
turns a tracker's failure into a warning.

``mirrored(tracking, run, emit)`` yields an ``emit`` that writes each event on as before, then
hands it to each configured ``Mirror``. A mirror that raises, at any point, is dropped after
one ``RunWarning``: a tracker that is down is not asked again, so a dead server costs one
bounded timeout, not one per epoch.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from core.errors import one_line
from core.storage import RunFiles, read_json
from core.training.events import Emit, Event, RunWarning, Tracked

MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: set once for the app and its workers
# The per-epoch numbers every tracker records, under the same names everywhere.
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
# The kept model's numbers from metrics.json, with test_accuracy and test_loss where there is a test split.
FINAL_METRICS = ("best_val_accuracy", "best_val_loss", "best_epoch", "epochs_run", "majority_rate")


class Outcome(StrEnum):
    """How a mirrored run ended, in MLflow's words for a run's status."""

    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


@dataclass(frozen=True)
class TrackedRun:
    """The run a mirror copies: its folder (plan, metrics, model) and its owner."""

    directory: Path
    owner: str

    @property
    def name(self) -> str:
        """The run id, which names the run in every tracker."""
        return self.directory.name

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.directory)

    def plan(self) -> dict[str, Any]:
        return read_json(self.files.plan_file, {})

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``'s final numbers: the best epoch's, and the test split's when there is one."""
        stored = read_json(self.files.metrics_file, {})
        final = {key: stored[key] for key in FINAL_METRICS}
        if "test" in stored:
            final |= {"test_accuracy": stored["test"]["accuracy"], "test_loss": stored["test"]["loss"]}
        return final


class Mirror(ABC):
    """One tracker's copy of one run. A subclass says how it opens, records and closes; any of
    them may raise, and ``mirrored`` turns that into a warning."""

    title: ClassVar[str]  # what the warning calls the tracker

    def environment(self) -> dict[str, str]:
        """Variables the tracker's library reads, set while the run lasts unless already set."""
        return {}

    @abstractmethod
    def start(self, run: TrackedRun) -> Tracked:
        """Open the tracker's record of ``run``; say where it is."""

    @abstractmethod
    def observe(self, event: Event) -> None:
        """Record what ``event`` says, if this tracker keeps it."""

    @abstractmethod
    def finish(self, run: TrackedRun, outcome: Outcome) -> None:
        """Record the final metrics and files of a finished run (``outcome`` FINISHED), and close."""


@dataclass(frozen=True)
class Tracking:
    """Where runs are mirrored: an MLflow tracking URI, a TensorBoard folder, both or neither."""

    mlflow_uri: str | None = None
    tensorboard_dir: Path | None = None

    @classmethod
    def configured(cls, mlflow_uri: str | None = None, tensorboard_dir: Path | None = None) -> Tracking:
        """The command line's choice, else the environment's ``MLFLOW_TRACKING_URI``."""
        return cls(mlflow_uri or os.environ.get(MLFLOW_URI_ENV) or None, tensorboard_dir)

    def mirrors(self) -> list[Mirror]:
        # Each library is imported when its mirror starts: a run with no tracker pays for none.
        from core.tracking.mlflow_run import MlflowMirror
        from core.tracking.tensorboard_log import TensorBoardMirror

        found: list[Mirror] = []
        if self.mlflow_uri:
            found.append(MlflowMirror(self.mlflow_uri))
        if self.tensorboard_dir is not None:
            found.append(TensorBoardMirror(self.tensorboard_dir))
        return found


@contextlib.contextmanager
def mirrored(tracking: Tracking, run: TrackedRun, emit: Emit) -> Iterator[Emit]:
    """``emit``, also copying the run to each configured tracker; the block's end (or its
    exception, which goes on) is the run's outcome."""
    mirrors = tracking.mirrors()
    if not mirrors:
        yield emit
        return
    live = _Guard(mirrors, emit)
    with _defaults({key: value for m in mirrors for key, value in m.environment().items()}):
        live.each(lambda mirror: emit(mirror.start(run)))

        def tracked(event: Event) -> None:
            emit(event)
            live.each(lambda mirror: mirror.observe(event))

        try:
            yield tracked
        except BaseException as exc:
            outcome = Outcome.FAILED if isinstance(exc, Exception) else Outcome.KILLED
            live.each(lambda mirror: mirror.finish(run, outcome))
            raise
        live.each(lambda mirror: mirror.finish(run, Outcome.FINISHED))


class _Guard:
    """The mirrors still working; the first error of each is a warning, and its last word."""

    def __init__(self, mirrors: list[Mirror], emit: Emit) -> None:
        self.mirrors, self.emit = list(mirrors), emit

    def each(self, work: Callable[[Mirror], None]) -> None:
        for mirror in list(self.mirrors):
            try:
                work(mirror)
            except Exception as exc:  # noqa: BLE001 - a tracker's failure, whatever it is, must not fail the run
                self.mirrors.remove(mirror)
                self.emit(RunWarning(message=f"{mirror.title} stopped recording this run: {one_line(exc)}"))


@contextlib.contextmanager
def _defaults(variables: dict[str, str]) -> Iterator[None]:
    """Set the variables nobody has set, for the block; then take them away again."""
    added = {key: value for key, value in variables.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
