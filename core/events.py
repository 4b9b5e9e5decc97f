"""What a training run reports, as small records, and the JSONL file that carries them.

The loop calls ``emit(event)``; the CLI, the app and the tests subscribe. Subscribers get plain
data, never the trainer. On disk every event is one JSON line with ``type`` and ``time``
(the run-directory contract in DESIGN.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

EVENTS_FILE = "events.jsonl"
STEP_DELAY_ENV = "TRANSFER_LAB_STEP_DELAY"


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class StatusChanged(Event):
    type: ClassVar[str] = "status"
    state: str
    message: str = ""


@dataclass(frozen=True)
class DataReady(Event):
    """The data set is validated and split: what the run trains on, and its identity."""

    type: ClassVar[str] = "data"
    name: str
    sha256: str
    classes: int
    train: int
    val: int
    test: int


@dataclass(frozen=True)
class BatchEnd(Event):
    type: ClassVar[str] = "batch"
    epoch: int
    step: int
    steps: int
    loss: float
    images_per_s: float


@dataclass(frozen=True)
class EpochEnd(Event):
    type: ClassVar[str] = "epoch"
    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class RunWarning(Event):
    type: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class RunFailed(Event):
    type: ClassVar[str] = "error"
    message: str


@dataclass(frozen=True)
class RunDone(Event):
    type: ClassVar[str] = "done"
    best_val_accuracy: float


Emit = Callable[[Event], None]


def paced(emit: Emit) -> Emit:
    """``emit``, then a pause of ``TRANSFER_LAB_STEP_DELAY`` seconds after each batch event.

    Browser tests watch tiny runs live; their workers are other processes, so the knob is an
    environment variable, read here once by whoever subscribes, never by the training itself.
    """
    delay = float(os.environ.get(STEP_DELAY_ENV) or 0)
    if not delay:
        return emit

    def slowed(event: Event) -> None:
        emit(event)
        if isinstance(event, BatchEnd):
            time.sleep(delay)

    return slowed


class EventLog:
    """Appends events to ``events.jsonl``, one complete line per ``write`` call.

    A single ``write`` of a whole line on an ``O_APPEND`` descriptor never interleaves with
    another writer's line, and readers skip a trailing partial line until it is complete.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / EVENTS_FILE

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), allow_nan=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class EventReader:
    """Yields the events appended since the last call: what a live view polls."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        self._offset = 0

    def new_events(self) -> list[dict[str, Any]]:
        return list(self._read())

    def _read(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self._offset += end
        for line in chunk[:end].splitlines():
            if line.strip():
                yield json.loads(line)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """All complete events of a run, oldest first."""
    return EventReader(run_dir).new_events()
