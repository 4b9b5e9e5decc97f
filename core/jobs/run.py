"""A run: read through one handle, kept by one writer.

``Run.open(run_id)`` is how everything outside the running process sees a run: its plan, status,
record, events, metrics and model folder, with the id checked against ``RUN_ID``. The
``StatusKeeper`` is the one writer of ``status.json``. There is exactly one at a time because
keeping a run means holding its ``worker.lock``: the submitter holds it while it writes
``queued``, hands the locked descriptor to the worker, which keeps it until it exits, and
whoever takes the lock after a worker has gone records how the run ended. ``python -m core
train`` keeps its run the same way, so its runs show in the app like any other.

Like the rest of the jobs layer, this module never imports torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Self

from core import storage
from core.access import LOCAL, Viewer
from core.errors import TransferLabError, one_line
from core.jobs import queue
from core.jobs.kinds import KIND_NAMES, TRAIN, JobKind, kind_of
from core.storage import NUMBER, OPTIONAL_NUMBER, OPTIONAL_STR, Damaged, RunFiles, read_record, write_json
from core.training.events import (
    BatchEnd,
    DataReady,
    Emit,
    EpochEnd,
    Event,
    EventLog,
    Progress,
    RunFailed,
    StatusChanged,
    Tracked,
)

# Every id the app makes (``20261129-120000-3fa2``) and every folder name ``train --out`` may
# use under runs/: letters, digits, dot, dash and underscore, starting with a letter or digit.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CANCELLED_MESSAGE = "cancelled by the user"
HEARTBEAT_INTERVAL_S = 2.0
STEP_DELAY_ENV = "TRANSFER_LAB_STEP_DELAY"
RECORD_SCHEMA = 1
# A worker's exit status when the disk was full: said when nothing else could be.
EXIT_DISK_FULL = errno.ENOSPC
# The owner of a run whose record cannot be read: no one can sign in as it (owner names have
# no parentheses), so admins alone see such a run, and may delete it.
UNKNOWN_OWNER = "(unknown)"
# What the readers of each record rely on, field by field: a file that breaks it is damaged.
STATUS_FIELDS = {
    "state": str, "message": str, "kind": str, "backend": str, "address": OPTIONAL_STR,
    "host": OPTIONAL_STR, "pid": (int, type(None)), "slot": (int, type(None)), "gpu": OPTIONAL_STR,
    "heartbeat": OPTIONAL_NUMBER, "submitted": OPTIONAL_NUMBER,
    "started": OPTIONAL_NUMBER, "finished": OPTIONAL_NUMBER,
}  # fmt: skip
RECORD_FIELDS = {
    "owner": str, "kind": str, "dataset_name": str, "backend": str, "created": OPTIONAL_NUMBER,
    "provenance": dict,
}  # fmt: skip
PLAN_FIELDS = {
    "data": str, "backbone": str, "case": int, "cut": OPTIONAL_STR, "weights": str, "epochs": int,
    "lr": NUMBER, "image_size": (int, type(None)), "augment": str, "seed": int, "val_fraction": NUMBER,
}  # fmt: skip
METRICS_FIELDS = {
    "best_val_accuracy": NUMBER, "majority_rate": NUMBER, "labels": list, "history": list,
    "per_class": dict, "confusion_matrix": list, "top_losses": list, "plan": dict,
}  # fmt: skip
FILE_FIELDS = {"run.json": RECORD_FIELDS, "plan.json": PLAN_FIELDS, "metrics.json": METRICS_FIELDS}


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its worker was gone when the app started
    DAMAGED = "damaged"  # as read, never written: a record of the run cannot be read

    @property
    def active(self) -> bool:
        """Queued or running: a process still answers for it."""
        return self in (RunState.QUEUED, RunState.RUNNING)

    @property
    def final(self) -> bool:
        return not self.active


# The stored fields that hold a name, and the names every version wrote in them.
_NAMED_FIELDS = {"state": tuple(RunState), "kind": KIND_NAMES}


class RunNotFound(TransferLabError, LookupError):
    """No run with that id, or an id no run can have (the two look the same from outside)."""


class Cancelled(BaseException):
    """Raised in a worker's main thread on SIGTERM.

    A BaseException, like KeyboardInterrupt, so that a training loop's ``except Exception``
    cannot swallow a cancel.
    """


class TimeLimit(BaseException):
    """Raised in a worker's main thread when its job's time is up (a BaseException, as above)."""


@dataclass(frozen=True)
class RunStatus:
    """``status.json`` read back into the record its keeper writes.

    Tolerant, like ``parse_event``: fields this version does not know are kept in ``extra`` (the
    keeper writes them back), missing ones take their defaults, so a status of every version
    reads. A status not yet written is ``queued``: its submitter is at work.
    """

    state: RunState = RunState.QUEUED
    message: str = ""
    kind: JobKind = TRAIN  # stored by its name; a status from before kinds were recorded is training
    backend: str = "local"  # which jobs backend runs it, and where (``core.jobs.backend.of_run``)
    address: str | None = None
    host: str | None = None
    pid: int | None = None
    slot: int | None = None
    gpu: str | None = None
    heartbeat: float | None = None
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The record of a stored status that ``read_status`` has checked."""
        known = _status_names(cls)
        values = {key: value for key, value in data.items() if key in known}
        values["state"] = RunState(values.get("state", RunState.QUEUED))
        values["kind"] = kind_of(values.get("kind", TRAIN.name))
        return cls(**values, extra={key: value for key, value in data.items() if key not in known})

    def to_dict(self) -> dict[str, Any]:
        """As ``status.json`` holds it: a field not known yet (None) is left out, which every
        reader takes for None; a status is rewritten every heartbeat, and counts to its owner's quota."""
        known = {name: getattr(self, name) for name in _status_names(RunStatus)} | {"kind": self.kind.name}
        return {**self.extra, **{name: value for name, value in known.items() if value is not None}}


def _status_names(cls: type[RunStatus]) -> set[str]:
    return {f.name for f in fields(cls)} - {"extra"}


def read_status(path: Path) -> RunStatus | Damaged:
    """A ``status.json``: a queued ``RunStatus`` before anything was written; ``Damaged`` when it
    is not a status."""
    stored = _read_checked(path, {}, STATUS_FIELDS)
    return stored if isinstance(stored, Damaged) else RunStatus.from_dict(stored)


def read_run_file(path: Path) -> dict[str, Any] | Damaged | None:
    """One of a run's JSON records (record, plan, metrics) as stored, checked against what its
    readers rely on: None when it is missing, ``Damaged`` saying what is wrong with it."""
    return _read_checked(path, None, FILE_FIELDS[path.name])


def _read_checked(path: Path, default: Any, checked: Mapping[str, type | tuple[type, ...]]) -> Any:
    """``read_record``, and a record that names a state or a job kind no version wrote is damaged:
    its readers resolve those names into records, and a run must still list, saying what is wrong."""
    stored = read_record(path, default, checked)
    if not isinstance(stored, dict):
        return stored  # missing (the default), or damaged already
    for name, known in _NAMED_FIELDS.items():
        if name in checked and name in stored and stored[name] not in known:
            return Damaged(path, f"{name} {stored[name]!r} is none of {', '.join(known)}")
    return stored


def all_runs() -> Iterator[Run]:
    """Every run under ``runs/`` that has a status, in no particular order."""
    if storage.runs_dir().is_dir():
        for directory in storage.runs_dir().iterdir():
            run = Run(directory)
            if is_run_id(run.id) and run.status_file.exists():
                yield run


def new_run_id() -> str:
    """Sortable by start time, unique without coordination: ``20261121-231500-3fa2``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def is_run_id(text: str) -> bool:
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class RunRecord:
    """Who started a run, on what, where, and with which versions: ``run.json``.

    Runs written before the record existed have none; ``Run.record`` then fills what it can.
    Tolerant, like ``RunStatus``: fields this version does not know are kept in ``extra`` and
    written back, missing ones take their defaults.
    """

    owner: str = "local"
    kind: JobKind = TRAIN  # what the job does, stored by its name
    dataset_name: str = ""  # what people call the data set (an upload's file name)
    backend: str = "local"  # which jobs backend runs it
    created: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        known = {name: getattr(self, name) for name in _record_names()} | {"kind": self.kind.name}
        return {**self.extra, "schema": RECORD_SCHEMA, **known}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """The record of a stored ``run.json`` that ``read_run_file`` has checked."""
        known = _record_names()
        values = {key: value for key, value in data.items() if key in known}
        values["kind"] = kind_of(values.get("kind", TRAIN.name))
        extra = {key: value for key, value in data.items() if key not in known and key != "schema"}
        return cls(**values, extra=extra)


def _record_names() -> set[str]:
    return {f.name for f in fields(RunRecord)} - {"extra"}


class Run(RunFiles):
    """One run directory. ``Run.open`` for a run the app knows by id; ``Run(path)`` for any
    folder (``train --out`` may write one anywhere)."""

    @classmethod
    def open(cls, run_id: str, viewer: Viewer = LOCAL) -> Run:
        """The run ``run_id`` under ``runs/``; ``RunNotFound`` if there is none, if ``viewer``
        may not see it (another owner's run is missing, the same words), or if the id is not
        one a run could have (such ids never reach the file system)."""
        if not is_run_id(run_id):
            raise RunNotFound(f"no run {_shown(run_id)}")
        run = cls(storage.runs_dir() / run_id)
        if not run.status_file.exists() or not viewer.may_see(run.record().owner):
            raise RunNotFound(f"no run {_shown(run_id)} in {storage.runs_dir()}")
        return run

    @property
    def id(self) -> str:
        return self.directory.name

    def status(self) -> RunStatus:
        """``status.json`` as last written (queued before anything was); for a damaged one, the
        state ``damaged`` and what is wrong as its message."""
        stored = read_status(self.status_file)
        if isinstance(stored, Damaged):
            return RunStatus(state=RunState.DAMAGED, message=str(stored))
        return stored

    def plan_fields(self) -> dict[str, Any]:
        """``plan.json`` as stored, whatever version wrote it; ``{}`` when missing or damaged."""
        stored = read_run_file(self.plan_file)
        return stored if isinstance(stored, dict) else {}

    def record(self) -> RunRecord:
        """``run.json``; for a run from before it, what the plan says; for a damaged one, a
        record whose owner is ``UNKNOWN_OWNER``."""
        stored = read_run_file(self.record_file)
        if isinstance(stored, Damaged):
            return RunRecord(owner=UNKNOWN_OWNER)
        if stored is not None:
            return RunRecord.from_dict(stored)
        data = str(self.plan_fields().get("data", ""))
        return RunRecord(dataset_name=Path(data.rstrip("/")).name)

    def write_record(self, record: RunRecord) -> None:
        write_json(self.record_file, record.to_dict())

    def metrics(self) -> dict[str, Any] | None:
        """``metrics.json``; None until the run has written it, and when it is damaged."""
        stored = read_run_file(self.metrics_file)
        return stored if isinstance(stored, dict) else None

    def cancel_requested(self) -> bool:
        return self.cancel_file.exists()

    def log_tail(self, lines: int = 3, max_chars: int = 300) -> str:
        """The worker's last words: the final non-empty lines of its log, on one line."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        tail = " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])
        return tail if len(tail) <= max_chars else "..." + tail[-max_chars:]


class StatusKeeper:
    """The one writer of a run's ``status.json``: it holds the run's ``worker.lock``.

    Keepers are made by ``take`` (the lock is free) or ``adopt`` (a locked descriptor handed
    over by the submitter). State changes also go to ``events.jsonl``, which live views follow.
    """

    def __init__(self, run: Run, lock_fd: int) -> None:
        self.run, self.lock_fd = run, lock_fd
        self.status = run.status()
        self._lock = threading.RLock()  # finish() sets the state under it
        self._events = EventLog(run.directory)

    @classmethod
    def take(cls, run: Run, timeout_s: float = 0.0) -> StatusKeeper | None:
        """The keeper of ``run`` if its lock can be had within ``timeout_s``, else None."""
        fd = queue.wait_for_lock(run.lock_file, timeout_s)
        return None if fd is None else cls(run, fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Let go of the lock: from here on, anyone may take the run over."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def update(self, **values: Any) -> None:
        """Write ``values`` (fields of ``RunStatus``) into the status."""
        with self._lock:
            self.status = replace(self.status, **values)
            write_json(self.run.status_file, self.status.to_dict())

    def set_state(self, state: RunState, message: str = "", **values: Any) -> None:
        """Write a state change to ``status.json`` and append the events that live views follow."""
        with self._lock:
            if state.final:
                values["finished"] = time.time()
            self.status = replace(self.status, **values, state=state, message=message)
            # The events first: whoever sees the new state in status.json finds every event up to
            # it in the log (the failure's message included).
            if state is RunState.FAILED:
                self._events(RunFailed(message=message))
            self._events(StatusChanged(state=state, message=message))
            write_json(self.run.status_file, self.status.to_dict())

    def begin(self) -> None:
        """The run starts training here: say so, and record where and with what it runs."""
        record = self.run.record()
        self.run.write_record(replace(record, provenance={**record.provenance, **provenance(self.run)}))
        self.set_state(RunState.RUNNING, started=time.time())

    def observe(self, event: Event) -> None:
        """A subscriber to the run's events: the data set's identity and the trackers' places
        go into the record."""
        note_provenance(self.run, event)

    @contextlib.contextmanager
    def beating(self) -> Iterator[None]:
        """Stamp ``heartbeat`` every couple of seconds from a thread of its own, so that only a
        frozen process misses it, not a busy training step."""
        halted = threading.Event()

        def beat() -> None:
            while not halted.wait(HEARTBEAT_INTERVAL_S):
                with contextlib.suppress(OSError):  # a full disk: the next beat tries again
                    self.update(heartbeat=time.time())

        self.update(heartbeat=time.time())
        thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            halted.set()
            thread.join()

    def finish(self, state: RunState, message: str = "") -> bool:
        """Record ``state`` as the run's outcome unless one is recorded already: the first
        outcome wins (a time limit's watchdog and the run itself may both decide one)."""
        with self._lock:
            if self.status.state.final:
                return False
            self.set_state(state, message)
            return True

    @contextlib.contextmanager
    def outcome(self) -> Iterator[None]:
        """Record how the block ended as the run's final state, then let any exception go on:
        ``done``; ``cancelled`` for a cancel (or Ctrl-C); else ``failed`` with one line."""
        try:
            yield
        except BaseException as exc:
            with _stop_signals_ignored():  # the outcome is decided: record it in peace
                cancelled = isinstance(exc, (Cancelled, KeyboardInterrupt)) or self.run.cancel_requested()
                if cancelled:
                    self.finish(RunState.CANCELLED, CANCELLED_MESSAGE)
                else:
                    self.finish(RunState.FAILED, str(exc) if isinstance(exc, TimeLimit) else one_line(exc))
            raise
        with _stop_signals_ignored():
            self.finish(RunState.DONE)


def create_run(run_id: str | None = None) -> tuple[Run, StatusKeeper]:
    """A fresh folder under ``runs/`` (named ``run_id``, else a new id) and the keeper of its
    status, holding its ``worker.lock``."""
    storage.runs_dir().mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        run = Run(storage.runs_dir() / (run_id or new_run_id()))
        try:
            run.directory.mkdir()
        except FileExistsError:
            if run_id:
                raise ValueError(f"run {run_id!r} already exists in {storage.runs_dir()}") from None
            continue  # two submissions in the same second drew the same suffix
        keeper = StatusKeeper.take(run)
        if keeper is None:
            raise RuntimeError(f"{run.lock_file} is locked by another process")
        return run, keeper
    raise RuntimeError(f"could not find a free run id in {storage.runs_dir()}")


@contextlib.contextmanager
def written_whole(run: Run) -> Iterator[None]:
    """Remove the run's folder if the block fails: a run is written whole or not at all."""
    try:
        yield
    except BaseException:
        shutil.rmtree(run.directory, ignore_errors=True)
        raise


def note_provenance(run: Run, event: Event) -> None:
    """Put the data set's identity into the run record once the data are ready, and where a
    tracker mirrors the run (``tracking``: each tracker's run id and URL) once it does: what the
    keeper observes, and what rank 0 of a multi-process run does itself."""
    if isinstance(event, DataReady):
        _add_provenance(run, dataset_sha256=event.sha256)
    elif isinstance(event, Tracked):
        tracking = run.record().provenance.get("tracking", {})
        where = {"run_id": event.run_id, "url": event.url}
        _add_provenance(run, tracking={**tracking, event.tracker: where})


def _add_provenance(run: Run, **facts: Any) -> None:
    record = run.record()
    run.write_record(replace(record, provenance={**record.provenance, **facts}))


def run_events(run: Run, keeper: StatusKeeper | None, *subscribers: Emit) -> Emit:
    """The ``emit`` of a run this process trains: each event goes to ``events.jsonl`` (what the
    pages read), to the keeper (the run record) and to any other subscriber (the CLI's display).

    After each batch and epoch event it pauses ``TRANSFER_LAB_STEP_DELAY`` seconds, and a tenth of
    that after each progress event of decoding and the feature pass: browser tests watch tiny runs
    live, and their workers are other processes, so the knob is an environment variable, read here
    once by the subscribers, never by the training itself.
    """
    log = EventLog(run.directory)
    delay = float(os.environ.get(STEP_DELAY_ENV) or 0)

    def emit(event: Event) -> None:
        log(event)
        if keeper is not None:
            keeper.observe(event)
        for subscriber in subscribers:
            subscriber(event)
        if delay and isinstance(event, (BatchEnd, EpochEnd)):
            time.sleep(delay)
        elif delay and isinstance(event, Progress):
            time.sleep(delay / 10)  # one per image once slowed: a tenth keeps a bar visible, not endless

    return emit


def provenance(run: Run) -> dict[str, Any]:
    """What produced a run, for whoever reads it later: versions, host and seed."""
    return {
        "app_version": app_version(),
        "python": platform.python_version(),
        "torch": installed("torch"),
        "torchvision": installed("torchvision"),
        "host": platform.node(),
        "seed": run.plan_fields().get("seed", 0),
    }


@cache
def app_version() -> str:
    """``0.1.0``, with the git commit when the app runs from a checkout (``0.1.0+3fa2b1c``)."""
    version = tomllib.loads((storage.CODE_ROOT / "pyproject.toml").read_text())["project"]["version"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(storage.CODE_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        if commit:
            return f"{version}+{commit}"
    return version


def installed(package: str) -> str | None:
    """A package's version without importing it (the server never imports torch)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    """No cancel and no time limit may interrupt the recording of an outcome. The handlers are
    put back after it: an ignored SIGTERM would pass to every process started later (a pool
    whose workers are stopped with SIGTERM then waits for them for ever)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGALRM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _shown(run_id: object) -> str:
    """A requested id, quoted and cut short: it may come from a crafted link."""
    text = repr(run_id)
    return text if len(text) <= 60 else text[:57] + "..."
