"""What a run reports, as small typed records, written to and read back from ``events.jsonl``.

The training calls ``emit(event)``; the worker, the CLI, the pages and the tests subscribe.
Subscribers get plain data, never the trainer. On disk every event is one JSON line with
``type`` and ``time`` (the run-directory contract in DESIGN.md), and reading turns each line back
into the same dataclass. Reading is tolerant, so that old and future runs stay readable: fields
this version does not know are dropped, and a type it does not know becomes ``UnknownEvent``.
``core.training.progress`` folds the events into what a person watching the run wants to know.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from core.storage import naming_errors

EVENTS_FILE = "events.jsonl"
PROGRESS_INTERVAL_S = 0.25  # at most four progress events a second, and each phase's last


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
class PhaseStarted(Event):
    """A run moves on to ``phase``: ``decoding`` images, computing ``features`` (cases 1 and 2),
    ``training``, ``exporting``."""

    type: ClassVar[str] = "phase"
    phase: str


@dataclass(frozen=True)
class Progress(Event):
    """How far the current phase before training has got: ``done`` of ``total`` images."""

    type: ClassVar[str] = "progress"
    phase: str
    done: int
    total: int
    images_per_s: float


@dataclass(frozen=True)
class RuntimeChosen(Event):
    """What ran a forward-only pass (``features``: the frozen body's; ``evaluation``: the
    exported model's) and why, with every candidate's measured rate (``core.models.runtime``)."""

    type: ClassVar[str] = "runtime"
    phase: str
    runtime: str
    reason: str
    images_per_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """``openvino at 212 images/s (torch 41, onnxruntime 180)``: the choice in a few words."""
        rates = dict(self.images_per_s)
        chosen = rates.pop(self.runtime, None)
        others = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
        rate = f" at {chosen:,.0f} images/s" if chosen is not None else ""
        return f"{self.runtime}{rate} ({others or self.reason})"


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
    image_size: int | None = None  # the training images' size (progressive resizing); None: cases 1, 2


@dataclass(frozen=True)
class RunWarning(Event):
    """Something the user should know; ``suggest`` names a remedy the app can offer as a button
    (``from_scratch``: case 4's fallback, a rerun with random weights)."""

    type: ClassVar[str] = "warning"
    message: str
    suggest: str | None = None


@dataclass(frozen=True)
class RunFailed(Event):
    type: ClassVar[str] = "error"
    message: str


@dataclass(frozen=True)
class RunDone(Event):
    type: ClassVar[str] = "done"
    best_val_accuracy: float


@dataclass(frozen=True)
class Tracked(Event):
    """Where the run is mirrored as it happens (``core.tracking``), for Results to link: an MLflow
    run (its id and page) or a TensorBoard log folder (``url`` is the folder)."""

    type: ClassVar[str] = "tracked"
    tracker: str
    run_id: str
    url: str


@dataclass(frozen=True)
class UnknownEvent(Event):
    """A line of a type this version does not know (written by a newer one): kept, not understood."""

    type: ClassVar[str] = "unknown"
    name: str
    data: dict[str, Any]


EVENT_TYPES: dict[str, type[Event]] = {
    kind.type: kind
    for kind in (
        StatusChanged,
        DataReady,
        PhaseStarted,
        Progress,
        RuntimeChosen,
        BatchEnd,
        EpochEnd,
        RunWarning,
        RunFailed,
        RunDone,
        Tracked,
    )
}

Emit = Callable[[Event], None]


def parse_event(data: dict[str, Any]) -> Event:
    """The event a JSON line holds: its own dataclass, extra fields dropped; ``UnknownEvent``
    for a type this version does not know, or one missing a field it needs."""
    kind = EVENT_TYPES.get(data.get("type", ""))
    if kind is not None:
        known = {f.name for f in fields(kind)}
        try:
            return kind(**{key: value for key, value in data.items() if key in known})
        except TypeError:
            pass
    return UnknownEvent(name=str(data.get("type")), data=data, time=float(data.get("time") or 0.0))


class PhaseMeter:
    """Counts one phase's images over several parts (the splits) and reports them as ``Progress``
    at most four times a second, and once more when the phase is complete."""

    def __init__(self, emit: Emit, phase: str, total: int) -> None:
        self.emit, self.phase, self.total = emit, phase, total
        self.done_before, self.started, self.last = 0, time.perf_counter(), 0.0
        emit(PhaseStarted(phase=phase))

    def part(self) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for the next part."""
        offset: list[int] = []

        def report(done: int, total: int) -> None:
            if not offset:
                offset.append(self.done_before)
                self.done_before += total
            count, now = offset[0] + done, time.perf_counter()
            if count == self.total or now - self.last >= PROGRESS_INTERVAL_S:
                self.last = now
                rate = count / max(now - self.started, 1e-9)
                self.emit(Progress(phase=self.phase, done=count, total=self.total, images_per_s=rate))

        return report


def phase_progress(emit: Emit, phase: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for a one-part ``phase`` whose size the work learns
    only once it has started (a data set's images, once its layout is read)."""
    meters: list[Callable[[int, int], None]] = []

    def progress(done: int, total: int) -> None:
        if not meters:
            meters.append(PhaseMeter(emit, phase, total).part())
        meters[0](done, total)

    return progress


class EventLog:
    """Appends events to ``events.jsonl``, one complete line per ``write`` call.

    A single ``write`` of a whole line on an ``O_APPEND`` descriptor never interleaves with
    another writer's line, and readers skip a trailing partial line until it is complete.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / EVENTS_FILE

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), allow_nan=False) + "\n"
        # Writable by the group where the umask allows it: under Ray, the app server starts the
        # log and a worker on another node, maybe under another uid, appends to it.
        data = line.encode()
        with naming_errors(self.path):  # a full disk says which file it could not write
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                if os.write(fd, data) < len(data):  # the disk filled up half-way through the line
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            finally:
                os.close(fd)


class EventReader:
    """Yields the events appended since the last call: what a live view polls."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        self._offset = 0

    def new_events(self) -> list[Event]:
        return list(self._read())

    def _read(self) -> Iterator[Event]:
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
                yield _parsed_line(line)


def _parsed_line(line: bytes) -> Event:
    """One line's event; a damaged line (a disk that filled mid-write) is an unknown event."""
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return UnknownEvent(name="", data={"line": line[:200].decode(errors="replace")}, time=0.0)
    return parse_event(data)


def read_events(run_dir: Path) -> list[Event]:
    """All complete events of a run, oldest first."""
    return EventReader(run_dir).new_events()
