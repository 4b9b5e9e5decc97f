"""Training runs as jobs: submit a plan, and a worker process of its own trains it.

This is the API the app, the command line and the worker use: submit, status, cancel, the runs
table, start-up recovery, and how a run's state is recorded. There is no daemon. ``submit``
writes the run directory and starts ``python -m core.worker RUN_DIR`` detached; the workers then
take turns through the tickets and slot locks of ``core.queue``, the layer below this one.

Every run directory holds ``worker.lock``, locked from the moment of submission (the submitter
hands the locked descriptor to the worker) until the worker exits. Whoever can take that lock
knows the worker is gone, pid reuse or not, and is the only one allowed to finish the run's
status: that is how a crash, a ``kill -9`` or a reboot comes to light, and why two pages reading
the same run never record its end twice.

This module never imports torch: the web server calls it, and must not initialise CUDA.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from core import hardware, paths, queue
from core.errors import TransferLabError
from core.events import EventLog, RunFailed, StatusChanged
from core.queue import WORKER_LOCK, try_lock  # by name: core.cli.train locks a run through core.jobs
from core.runs import (
    FINAL_STATES,
    METRICS_FILE,
    PLAN_FILE,
    STATUS_FILE,
    new_run_id,
    read_json,
    run_dir,
    write_json,
)

MAX_RUNS_ENV = "TRANSFER_LAB_MAX_RUNS"
DEFAULT_TARGET = "core.train:run"
ACTIVE_STATES = ("queued", "running")

WORKER_LOG = "worker.log"
CANCEL_FILE = "cancel.requested"
CANCELLED_MESSAGE = "cancelled by the user"

HEARTBEAT_INTERVAL_S = 2.0
# A worker's heartbeat comes from a thread of its own, so only a frozen process misses it for
# this long; a busy training step does not.
HEARTBEAT_TIMEOUT_S = 60.0
# How long a reader waits for a busy ``worker.lock`` before it considers killing the holder: long
# enough for another reader, who holds it only while recording a dead worker's end, to finish.
LOCK_PATIENCE_S = 0.5
# How long a worker may take to honour SIGTERM before it is killed outright.
CANCEL_GRACE_S = 10.0

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What a runs table shows from each run's files; only these fields are kept in _summaries.
_SUMMARY_FIELDS = {PLAN_FILE: ("backbone", "case", "data"), METRICS_FILE: ("best_val_accuracy",)}
# path -> (the file's stat stamp, its summary fields): a finished run's files are parsed once.
_summaries: dict[Path, tuple[tuple[int, int, int] | None, dict[str, Any]]] = {}
_TARGET_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class RunNotFound(TransferLabError, LookupError):
    """No run with that id under the runs folder."""


# ---------------------------------------------------------------------------- public API


def max_concurrent() -> int:
    """How many runs may train at once: ``TRANSFER_LAB_MAX_RUNS``, else one per GPU, one on CPU."""
    raw = os.environ.get(MAX_RUNS_ENV, "").strip()
    if not raw:
        return max(1, len(gpu_ids()))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_RUNS_ENV}={raw!r}: expected a whole number of runs, 1 or more")
    return int(raw)


def gpu_ids() -> list[str]:
    """The GPUs a run may use, found without initialising CUDA (the server must never do that)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(index) for index in range(len(hardware.gpu_names()))]
    ids = [part.strip() for part in visible.split(",") if part.strip()]
    # CUDA ignores everything from the first negative entry on: "-1" hides all GPUs.
    negative = [i for i, part in enumerate(ids) if part.startswith("-")]
    return ids[: negative[0]] if negative else ids


def submit(plan: Mapping[str, Any], *, run_id: str | None = None, target: str = DEFAULT_TARGET) -> str:
    """Queue ``plan`` as a new run and start its worker; returns the run id at once.

    ``target`` is the training entry point as ``module:function``, called in the worker as
    ``function(run_dir, emit)``; tests pass small targets of their own.
    """
    if not _TARGET_PATTERN.match(target):
        raise ValueError(f"target {target!r} is not of the form 'package.module:function'")
    plan = json.loads(json.dumps(dict(plan), allow_nan=False))  # refuse what JSON cannot carry now
    max_concurrent()  # likewise a bad TRANSFER_LAB_MAX_RUNS, rather than in the worker
    run_id, directory, lock_fd = _create_run_dir(run_id)
    try:
        write_json(directory / PLAN_FILE, plan)
        record_state(directory, {"pid": None, "heartbeat": None, "submitted": time.time()}, "queued")
        queue.enqueue(run_id)
        try:
            _start_worker(directory, target, lock_fd)
        except OSError as exc:
            queue.dequeue(run_id)
            queued = read_json(directory / STATUS_FILE)
            record_state(directory, queued, "failed", f"could not start the worker: {exc}")
            raise
    finally:
        os.close(lock_fd)  # the worker holds its own copy of the lock from here on
    return run_id


def status(run_id: str) -> dict[str, Any]:
    """The run's ``status.json`` plus ``run_id`` and ``queue_position``, after noticing a dead worker."""
    current = _reconcile(_existing_run_dir(run_id))
    position = queue_position(run_id) if current.get("state") == "queued" else None
    return {**current, "run_id": run_id, "queue_position": position}


def queue_position(run_id: str) -> int | None:
    """1 for the next run to start, 2 for the one after it...; None when not waiting."""
    line = waiting_runs()
    return line.index(run_id) + 1 if run_id in line else None


def cancel(run_id: str) -> None:
    """Stop a queued or running run: it is marked ``cancelled`` within seconds.

    A finished run stays as it is. A worker that ignores SIGTERM for ``CANCEL_GRACE_S`` is
    killed the next time anyone reads its status.
    """
    directory = _existing_run_dir(run_id)
    if read_json(directory / STATUS_FILE, {}).get("state") not in ACTIVE_STATES:
        return
    with contextlib.suppress(FileExistsError):
        # The request's time is the file's: a second click must not restart the grace period.
        (directory / CANCEL_FILE).open("x").close()
    pid = read_json(directory / STATUS_FILE, {}).get("pid")
    if pid and queue.is_worker_of(pid, directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _reconcile(directory)


def list_runs() -> list[dict[str, Any]]:
    """Every run, newest first, with what a runs table shows: state, plan summary, best accuracy.

    Plans and metrics are parsed again only when their files change, so a long history of
    finished runs costs a ``stat`` each.
    """
    line = waiting_runs()
    rows = [
        _row(directory, _reconcile(directory), line) | _summary(directory / METRICS_FILE)
        for directory in _run_dirs()
    ]
    return _newest_first(rows)


def active_runs() -> list[dict[str, Any]]:
    """The queued and running runs, newest first: ``list_runs`` rows without ``best_val_accuracy``.

    Cheap enough for every rerun of every page: besides each ``status.json``, it reads only the
    plans of active runs, and checks only their workers.
    """
    active = [d for d in _run_dirs() if read_json(d / STATUS_FILE, {}).get("state") in ACTIVE_STATES]
    if not active:
        return []
    line = waiting_runs()
    rows = [_row(directory, _reconcile(directory), line) for directory in active]
    return _newest_first([row for row in rows if row["state"] in ACTIVE_STATES])


def recover() -> list[str]:
    """Mark runs whose worker is gone as ``interrupted``; the app calls this once at start-up.

    Workers outlive the server (they run in sessions of their own), so a run whose worker still
    holds its lock keeps going and is left alone. Returns the ids of the runs marked.
    """
    marked = []
    for directory in _run_dirs():
        if read_json(directory / STATUS_FILE, {}).get("state") not in ACTIVE_STATES:
            continue
        if _reconcile(directory, gone_state="interrupted").get("state") == "interrupted":
            marked.append(directory.name)
    waiting_runs()  # clears tickets whose run folder is gone
    return marked


# ------------------------------------------------- shared with core.worker: state and line


def record_state(
    directory: Path, current: Mapping[str, Any], state: str, message: str = ""
) -> dict[str, Any]:
    """Write a state change to ``status.json`` and append the events that live views follow."""
    updated = {**current, "state": state, "message": message}
    if state in FINAL_STATES:
        updated["finished"] = time.time()
    emit = EventLog(directory)
    if state == "failed":
        # First, so that whoever sees the final status, in status.json or in the events, finds it.
        emit(RunFailed(message=message))
    write_json(directory / STATUS_FILE, updated)
    emit(StatusChanged(state=state, message=message))
    return updated


def cancel_requested(directory: Path) -> bool:
    return (directory / CANCEL_FILE).exists()


def waiting_runs() -> list[str]:
    """Ids of the runs waiting for a slot, next in line first; a dead worker's run is finished."""
    return queue.waiting_runs(on_gone=_settle_orphan)


def log_tail(directory: Path, lines: int = 3, max_chars: int = 300) -> str:
    """The worker's last words: the final non-empty lines of its log, on one line."""
    try:
        with open(directory / WORKER_LOG, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    tail = " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])
    return tail if len(tail) <= max_chars else "..." + tail[-max_chars:]


# ---------------------------------------------------------------------------- internals


def _create_run_dir(run_id: str | None) -> tuple[str, Path, int]:
    """A fresh run folder and a descriptor locking its ``worker.lock``."""
    paths.runs_dir().mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        chosen = run_id or new_run_id()
        directory = run_dir(chosen)
        try:
            directory.mkdir()
        except FileExistsError:
            if run_id:
                raise ValueError(f"run {run_id!r} already exists in {paths.runs_dir()}") from None
            continue  # two submissions in the same second drew the same suffix
        lock_fd = try_lock(directory / WORKER_LOCK)
        if lock_fd is None:
            raise RuntimeError(f"{directory / WORKER_LOCK} is locked by another process")
        return chosen, directory, lock_fd
    raise RuntimeError(f"could not find a free run id in {paths.runs_dir()}")


def _start_worker(directory: Path, target: str, lock_fd: int) -> None:
    env = {
        **os.environ,
        paths.HOME_ENV: str(paths.home().resolve()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",  # so the log holds the last words of a worker that is killed
    }
    # An absolute folder, which is also how a reader tells this worker from a stranger with a recycled pid.
    command = [sys.executable, "-m", "core.worker", str(directory.resolve()), "--target", target]
    command += ["--lock-fd", str(lock_fd)]
    with open(directory / WORKER_LOG, "ab") as log:
        worker = subprocess.Popen(
            command,
            cwd=directory,  # whatever the run writes by relative path stays in its folder
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(lock_fd,),
            start_new_session=True,  # survives the server, and a cancel can kill its whole group
        )
    # Reap the worker when it ends, so a long-lived server collects no zombies.
    threading.Thread(target=worker.wait, name=f"reap-worker-{worker.pid}", daemon=True).start()


def _existing_run_dir(run_id: str) -> Path:
    directory = run_dir(run_id)
    if not (directory / STATUS_FILE).exists():
        raise RunNotFound(f"no run {run_id!r} in {paths.runs_dir()}")
    return directory


def _run_dirs() -> Iterator[Path]:
    if paths.runs_dir().is_dir():
        yield from (d for d in paths.runs_dir().iterdir() if (d / STATUS_FILE).exists())


def _row(directory: Path, current: Mapping[str, Any], line: list[str]) -> dict[str, Any]:
    """A runs table's row, from the run's status, its place in ``line`` and its plan."""
    run_id = directory.name
    return (
        {"run_id": run_id}
        | {key: current.get(key) for key in ("state", "message", "submitted", "started", "finished")}
        | {"queue_position": line.index(run_id) + 1 if run_id in line else None}
        | _summary(directory / PLAN_FILE)
    )


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (row["submitted"] or 0.0, row["run_id"]), reverse=True)


def _summary(path: Path) -> dict[str, Any]:
    """The runs table's fields of a plan or metrics file, parsed only when the file has changed."""
    stamp = _stamp(path)  # before reading: a file replaced in between is read again next time
    cached = _summaries.get(path)
    if cached is None or cached[0] != stamp:
        data = read_json(path, {}) if stamp else {}
        cached = _summaries[path] = (stamp, {key: data.get(key) for key in _SUMMARY_FIELDS[path.name]})
    return dict(cached[1])


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes whenever ``write_json`` replaces the file, even within one clock tick: its inode."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_ino, info.st_size


def _reconcile(directory: Path, gone_state: str = "failed") -> dict[str, Any]:
    """Finish the status of a run whose worker is gone; kill a worker that hangs or ignores a cancel."""
    current = read_json(directory / STATUS_FILE, {})
    if current.get("state") not in ACTIVE_STATES:
        return current
    lock_fd = try_lock(directory / WORKER_LOCK)
    kill_reason = None
    if lock_fd is None:
        kill_reason = _reason_to_kill(directory, current)
        if kill_reason is None:
            return current
        # The holder may be another reader recording this run's end, its worker long dead.
        lock_fd = queue.wait_for_lock(directory / WORKER_LOCK, timeout_s=LOCK_PATIENCE_S)
    if lock_fd is None:
        pid = current.get("pid")
        if not pid or not queue.is_worker_of(pid, directory):
            return current  # whoever holds the lock, that pid is no longer ours to kill
        queue.kill_group(pid)
        lock_fd = queue.wait_for_lock(directory / WORKER_LOCK, timeout_s=5.0)
        if lock_fd is None:
            return current
    try:
        current = read_json(directory / STATUS_FILE, {})  # the worker may have finished meanwhile
        if current.get("state") in ACTIVE_STATES:
            state, message = _verdict(directory, current, gone_state, kill_reason)
            current = record_state(directory, current, state, message)
            queue.dequeue(directory.name)
    finally:
        os.close(lock_fd)
    return current


def _settle_orphan(directory: Path) -> None:
    """A ticket outlived its worker: record how its run ended, if the run's folder is still there."""
    if (directory / STATUS_FILE).exists():
        _reconcile(directory)


def _reason_to_kill(directory: Path, current: Mapping[str, Any]) -> str | None:
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        if now - (directory / CANCEL_FILE).stat().st_mtime > CANCEL_GRACE_S:
            return f"the worker ignored the cancel for {CANCEL_GRACE_S:.0f} s"
    beat = current.get("heartbeat") or current.get("submitted")
    if beat and now - beat > HEARTBEAT_TIMEOUT_S:
        return f"the worker stopped responding (no heartbeat for {now - beat:.0f} s) and was killed"
    return None


def _verdict(
    directory: Path, current: Mapping[str, Any], gone_state: str, kill_reason: str | None
) -> tuple[str, str]:
    """The final state and message of a run whose worker is gone."""
    if cancel_requested(directory):
        return "cancelled", CANCELLED_MESSAGE
    if kill_reason:
        state, reason = "failed", kill_reason
    elif gone_state == "interrupted":
        state = "interrupted"
        reason = f"its worker was gone when the app started (the run was {current['state']})"
    else:
        state, reason = "failed", f"the worker (pid {current.get('pid')}) died without reporting"
    tail = log_tail(directory)
    return state, f"{reason}; last words: {tail}" if tail else f"{reason}; its log is empty"
