"""Training runs as jobs: submit a plan, and a worker process of its own trains it.

This is the API the app, the command line and the worker use: submit, status, reconcile,
cancel, the runs table and start-up recovery. There is no daemon. ``submit`` writes the run
directory and starts ``python -m core.jobs.worker RUN_DIR`` detached; the workers then take turns
through the tickets and slot locks of ``core.jobs.queue``, the layer below this one.

``status`` only reads. ``reconcile`` is the one call that looks behind a run's status at its
worker: whoever can take a run's ``worker.lock`` knows the worker is gone, pid reuse or not, and
is the only one allowed to record how the run ended; a worker that stopped answering, or
ignores a cancel, is killed there. The live page calls it every couple of seconds, listing and
start-up recovery call it too. Another jobs backend plugs in at this seam: the pid and lock
checks live behind it. ``core.jobs.backend`` says which backend new jobs go to (the local
workers, or a Ray cluster: ``core.jobs.ray_backend``), and each run's ``status.json`` which
backend settles it.

This module never imports torch: the web server calls it, and must not initialise CUDA.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from core import storage
from core.access import LOCAL, Viewer
from core.errors import is_disk_full, one_line
from core.jobs import backend, hardware, queue, usage
from core.jobs.run import (
    CANCELLED_MESSAGE,
    EXIT_DISK_FULL,
    UNKNOWN_OWNER,
    Run,
    RunNotFound,
    RunRecord,
    RunState,
    StatusKeeper,
    is_run_id,
    new_run_id,
    read_run_file,
)
from core.jobs.run import all_runs as _runs
from core.jobs.run import state_of as _state
from core.limits import LimitExceeded, Limits, human_bytes
from core.storage import Damaged, read_record

MAX_RUNS_ENV = "TRANSFER_LAB_MAX_RUNS"
DEFAULT_TARGET = "core.training.train:run"
TRAIN_KIND = "train"  # every other kind of job starts at once, beside the training queue

# A worker's heartbeat comes from a thread of its own, so only a frozen process misses it for
# this long; a busy training step does not.
HEARTBEAT_TIMEOUT_S = 60.0
# How long a reader waits for a busy ``worker.lock`` before it considers killing the holder: long
# enough for another reader, who holds it only while recording a dead worker's end, to finish.
LOCK_PATIENCE_S = 0.5
# How long a worker may take to honour SIGTERM before it is killed outright.
CANCEL_GRACE_S = 10.0
# How long a reader waits to reap a worker it saw die (the server started it) for its exit status.
REAP_PATIENCE_S = 2.0

# What a runs table shows from each run's files; only these fields are kept in _summaries.
_SUMMARY_FIELDS = {
    "plan.json": ("backbone", "case", "data"),
    "metrics.json": ("best_val_accuracy", "majority_rate"),
    "run.json": ("dataset_name", "owner"),
}
# path -> (the file's stat stamp, its summary fields, what is wrong with it): a finished run's
# files are parsed once.
_summaries: dict[Path, tuple[tuple[int, int, int] | None, dict[str, Any], str | None]] = {}
# The workers this process started, by run folder, until each one's exit.json is written.
_workers: dict[Path, subprocess.Popen] = {}
_TARGET_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# What callers of this module use from the layer below, by name.
__all__ = ["LimitExceeded", "Run", "RunNotFound", "RunState"]


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


def submit(
    plan: Mapping[str, Any],
    *,
    run_id: str | None = None,
    target: str = DEFAULT_TARGET,
    dataset_name: str | None = None,
    owner: str = "local",
    kind: str = TRAIN_KIND,
    queued: bool = True,
    time_limit_s: float | None = None,
    limits: Limits | None = None,
    files: Mapping[str, bytes] | None = None,
) -> str:
    """Queue ``plan`` as a new run and start its worker; returns the run id at once.

    ``target`` is the training entry point as ``module:function``, called in the worker as
    ``function(run_dir, emit)``; tests pass small targets of their own. ``dataset_name`` is what
    people call the data (an upload's file name); by default the data path's last part.

    Jobs other than training (``kind``) are kept out of the runs table; a job that is not
    ``queued`` starts at once, beside any training (validating an upload must not wait behind
    a long run); past ``time_limit_s`` a job fails, saying so. ``files`` (name -> bytes) are the
    job's inputs, written into its folder before its worker starts (a zip of images to classify).

    With ``limits``, a job over this instance's limits for ``owner`` is refused with
    ``LimitExceeded`` before anything is written (see ``admitted``); a training run's plan is
    checked against them too.
    """
    if limits is not None:
        if kind == TRAIN_KIND:
            limits.check_plan(int(plan.get("epochs") or 0), plan.get("image_size"))
        with admitted(owner, limits, kind=kind, adding=sum(map(len, (files or {}).values()))):
            return submit(
                plan, run_id=run_id, target=target, dataset_name=dataset_name, owner=owner, kind=kind,
                queued=queued, time_limit_s=time_limit_s, files=files,
            )  # fmt: skip
    if not _TARGET_PATTERN.match(target):
        raise ValueError(f"target {target!r} is not of the form 'package.module:function'")
    if run_id is not None and not is_run_id(run_id):
        raise ValueError(f"run id {run_id!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    plan = _absolute_paths(json.loads(json.dumps(dict(plan), allow_nan=False)))  # JSON-safe, now
    chosen = backend.configured()  # a misconfigured backend is refused before any folder is made
    max_concurrent()  # likewise a bad TRANSFER_LAB_MAX_RUNS, rather than in the worker
    run, keeper = _create_run(run_id)
    with keeper:  # our copy of the lock goes at the end: the worker holds its own from then on
        with _removed_on_failure(run):  # a full disk leaves no half-written run
            storage.write_json(run.plan_file, plan)
            for file_name, content in (files or {}).items():
                storage.write_bytes_atomic(run.directory / file_name, content)
            name = dataset_name or Path(str(plan.get("data", "")).rstrip("/")).name
            record = RunRecord(
                owner=owner, kind=kind, dataset_name=name, backend=chosen.name, created=time.time()
            )
            run.write_record(record)
            keeper.set_state(
                RunState.QUEUED,
                pid=None,
                heartbeat=None,
                submitted=time.time(),
                kind=kind,
                **chosen.status_fields(),
            )
        time_limit = ["--time-limit", f"{time_limit_s:g}"] if time_limit_s else []
        if chosen.name == backend.RAY:
            _submit_to_ray(run, keeper, target, time_limit, kind=kind, plan=plan, address=chosen.address)
            return run.id
        if queued:
            queue.enqueue(run.id)
        options = ([] if queued else ["--unqueued"]) + time_limit
        try:
            _start_worker(run, target, keeper.lock_fd, options)
        except OSError as exc:
            queue.dequeue(run.id)
            keeper.set_state(RunState.FAILED, f"could not start the worker: {exc}")
            raise
    return run.id


@contextlib.contextmanager
def admitted(
    owner: str, limits: Limits, runs: int = 1, *, kind: str = TRAIN_KIND, adding: int = 0
) -> Iterator[None]:
    """Let ``owner`` start ``runs`` jobs of ``kind`` within ``limits``, or raise ``LimitExceeded``
    naming the limit: at most ``max_active_runs`` of their jobs of every kind queued or running,
    at most ``max_side_jobs`` jobs besides training running on the instance, and nothing new
    over the disk quota (``adding``: the bytes this job brings, such as an uploaded zip).

    Every kind of job is admitted here. The checks and what the block writes (the job's folder,
    the uploaded bytes) happen under one lock, so that people submitting at the same moment are
    counted and charged one after the other: none slips past a limit.
    """
    with storage.locked(storage.queue_dir() / "admission.lock"):
        _check_active_jobs(owner, limits, runs)
        if kind != TRAIN_KIND:
            _check_side_jobs(limits, runs)
        _check_quota(owner, limits, adding)
        yield


def active_jobs(owner: str) -> int:
    """How many of ``owner``'s jobs, of every kind, are queued or running: what
    ``max_active_runs`` counts."""
    return sum(1 for run in _runs() if _state(run.status()).active and _owner(run) == owner)


def status(run_id: str, viewer: Viewer = LOCAL) -> dict[str, Any]:
    """The run's ``status.json`` plus ``run_id`` and ``queue_position``, as last recorded;
    ``RunNotFound`` for a run ``viewer`` may not see.

    It only reads: a run whose worker died still says ``running`` here until ``reconcile``.
    """
    return _with_position(Run.open(run_id, viewer))


def reconcile(run_id: str, viewer: Viewer = LOCAL) -> dict[str, Any]:
    """``status`` after settling the run with its worker: a gone worker's run is finished, a
    frozen or cancel-ignoring worker is killed first."""
    run = Run.open(run_id, viewer)
    return _with_position(run, _reconcile(run))  # on a full disk, an ending status.json lacks


def queue_position(run_id: str) -> int | None:
    """1 for the next run to start, 2 for the one after it...; None when not waiting."""
    line = waiting_runs()
    return line.index(run_id) + 1 if run_id in line else None


def cancel(run_id: str, viewer: Viewer = LOCAL) -> None:
    """Stop a queued or running run: it is marked ``cancelled`` within seconds.

    A finished run stays as it is. A worker that ignores SIGTERM for ``CANCEL_GRACE_S`` is
    killed the next time anyone reconciles its run.
    """
    run = Run.open(run_id, viewer)
    if not _state(run.status()).active:
        return
    with contextlib.suppress(FileExistsError):
        # The request's time is the file's: a second click must not restart the grace period.
        run.cancel_file.open("x").close()
    if _on_ray(run.status()):
        from core.jobs import ray_backend

        ray_backend.cancel(run)
        _reconcile(run)
        return
    pid = run.status().get("pid")
    if pid and queue.is_worker_of(pid, run.directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _reconcile(run)


def list_runs(kind: str = "train", viewer: Viewer = LOCAL) -> list[dict[str, Any]]:
    """Every run of ``kind`` that ``viewer`` may see, newest first, with what a runs table
    shows: state, plan summary, best accuracy. A run with a damaged record is ``damaged``, its
    message saying what is wrong.

    Active runs are reconciled first. Plans and metrics are parsed again only when their files
    change, so a long history of finished runs costs a ``stat`` each.
    """
    line = waiting_runs()
    rows = []
    for run in _runs():
        current = run.status()
        if current.get("kind", "train") != kind or not _visible(run, viewer):
            continue
        current = _reconcile(run) if _state(current).active else current
        rows.append(_row(run, current, line) | _summary(run.metrics_file))
    return _newest_first(rows)


def active_runs(viewer: Viewer = LOCAL) -> list[dict[str, Any]]:
    """The queued and running runs ``viewer`` may see, newest first: ``list_runs`` rows without
    ``best_val_accuracy``.

    Cheap enough for every rerun of every page: besides each ``status.json``, it reads only the
    plans of active runs, and checks only their workers.
    """
    active = [run for run in _runs() if _is_active_training(run.status()) and _visible(run, viewer)]
    if not active:
        return []
    line = waiting_runs()
    rows = [_row(run, _reconcile(run), line) for run in active]
    return _newest_first([row for row in rows if _state(row).active])


def recover() -> list[str]:
    """Mark runs whose worker is gone as ``interrupted``; the app calls this once at start-up.

    Workers outlive the server (they run in sessions of their own), so a run whose worker still
    holds its lock keeps going and is left alone. Returns the ids of the runs marked.
    """
    marked = []
    for run in _runs():
        if not _state(run.status()).active:
            continue
        if _reconcile(run, gone_state=RunState.INTERRUPTED).get("state") == RunState.INTERRUPTED:
            marked.append(run.id)
    waiting_runs()  # clears tickets whose run folder is gone
    return marked


def waiting_runs() -> list[str]:
    """Ids of the runs waiting for a slot, next in line first; a dead worker's run is finished."""
    return queue.waiting_runs(on_gone=_settle_orphan)


def worker_pythonpath() -> str:
    """Where a worker finds this code first, then whatever this process finds on its path."""
    return os.pathsep.join(filter(None, [str(storage.CODE_ROOT), os.environ.get("PYTHONPATH")]))


# ---------------------------------------------------------------------------- internals


def _check_active_jobs(owner: str, limits: Limits, runs: int) -> None:
    if limits.max_active_runs is None:
        return
    active = active_jobs(owner)
    if active + runs > limits.max_active_runs:
        asked = f"; this asks for {runs} more" if runs > 1 else ""
        raise LimitExceeded(
            f"you have {active} job{'' if active == 1 else 's'} queued or running{asked}, and the limit here "
            f"is {limits.max_active_runs} per person: cancel one, or wait for one to finish"
        )


def _check_side_jobs(limits: Limits, runs: int) -> None:
    if limits.max_side_jobs is None:
        return
    running = sum(1 for run in _runs() if _is_active_side_job(run.status()))
    if running + runs > limits.max_side_jobs:
        raise LimitExceeded(
            f"this server is already running {running} of the {limits.max_side_jobs} jobs it runs at once besides "
            "training (checking uploads, analyses, estimates, predictions): try again in a minute"
        )


def _check_quota(owner: str, limits: Limits, adding: int = 0) -> None:
    quota = limits.disk_quota_bytes
    if quota is None:
        return
    used = usage.owner_bytes(owner)
    if used + adding > quota:
        needs = f" and this needs {human_bytes(adding)} more" if adding else ""
        raise LimitExceeded(
            f"your runs and data sets take {human_bytes(used)}{needs}, over your disk quota of "
            f"{human_bytes(quota)}: ask an admin to delete old runs"
        )


def _visible(run: Run, viewer: Viewer) -> bool:
    """Whether ``viewer`` may see ``run``; its owner is read once until ``run.json`` changes."""
    return viewer.sees_all or viewer.may_see(_owner(run))


def _owner(run: Run) -> str | None:
    """Who started ``run``, from its record; ``UNKNOWN_OWNER`` when the record is damaged."""
    return UNKNOWN_OWNER if _damage(run.record_file) else _summary(run.record_file)["owner"]


def _is_active_training(current: Mapping[str, Any]) -> bool:
    return _state(current).active and current.get("kind", TRAIN_KIND) == TRAIN_KIND


def _is_active_side_job(current: Mapping[str, Any]) -> bool:
    return _state(current).active and current.get("kind", TRAIN_KIND) != TRAIN_KIND


def _absolute_paths(plan: dict[str, Any]) -> dict[str, Any]:
    """Data and weights given relative to the submitter's folder, made absolute: the worker
    runs in the run's own folder, where a relative path would name something else."""
    for key in ("data", "weights"):
        value = plan.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and Path(value).exists():
            plan[key] = str(Path(value).resolve())
    return plan


def _create_run(run_id: str | None) -> tuple[Run, StatusKeeper]:
    """A fresh run folder and the keeper of its status, holding its ``worker.lock``."""
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
def _removed_on_failure(run: Run) -> Iterator[None]:
    """Remove the run's folder if the block fails: a run is written whole or not at all."""
    try:
        yield
    except BaseException:
        shutil.rmtree(run.directory, ignore_errors=True)
        raise


def _on_ray(current: Mapping[str, Any]) -> bool:
    """Whether a run runs on Ray: its status says so, whatever the configuration says now."""
    return backend.of_run(current).name == backend.RAY


def _submit_to_ray(run: Run, keeper: StatusKeeper, target: str, options: list[str], **how: Any) -> None:
    """Hand the run to Ray; a refusal fails the run, saying why, and is raised."""
    from core.jobs import ray_backend

    try:
        ray_backend.submit(run, target, options, **how)
    except backend.BackendError as exc:
        keeper.set_state(RunState.FAILED, str(exc))
        raise


def _start_worker(run: Run, target: str, lock_fd: int, options: list[str]) -> None:
    env = {
        **os.environ,
        storage.HOME_ENV: str(storage.home()),
        "PYTHONPATH": worker_pythonpath(),
        "PYTHONUNBUFFERED": "1",  # so the log holds the last words of a worker that is killed
    }
    # An absolute folder, which is also how a reader tells this worker from a stranger with a recycled pid.
    command = [sys.executable, "-m", queue.WORKER_MODULE, str(run.directory.resolve()), "--target", target]
    command += ["--lock-fd", str(lock_fd), *options]
    with open(run.log_file, "ab") as log:
        worker = subprocess.Popen(
            command,
            cwd=run.directory,  # whatever the run writes by relative path stays in its folder
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(lock_fd,),
            start_new_session=True,  # survives the server, and a cancel can kill its whole group
        )
    # Reap the worker when it ends, so a long-lived server collects no zombies, and record how
    # it ended: a worker killed outright (kill -9, the out-of-memory killer) cannot say so itself.
    _workers[run.directory] = worker
    threading.Thread(target=_reap, args=(run, worker), name=f"reap-worker-{worker.pid}", daemon=True).start()


def _reap(run: Run, worker: subprocess.Popen) -> None:
    """Wait for ``worker`` to end and write its exit status to ``exit.json``. Until that is
    written (the disk may be full) the worker stays in ``_workers``, where ``_verdict`` asks it."""
    returncode = worker.wait()
    with contextlib.suppress(OSError):  # the run's folder may be gone, or the disk full
        storage.write_json(run.exit_file, {"pid": worker.pid, "returncode": returncode})
        _workers.pop(run.directory, None)


def _exit_status(run: Run, pid: int | None) -> int | None:
    """How the worker ``pid`` of ``run`` ended, if the process that started it knows: its exit
    code, or minus the signal that killed it."""
    worker = _workers.get(run.directory)
    if worker is not None and worker.pid == pid:
        # Its lock is released as the process dies, a moment before it can be reaped.
        with contextlib.suppress(subprocess.TimeoutExpired):
            return worker.wait(timeout=REAP_PATIENCE_S)
    exited = read_record(run.exit_file, {})
    if isinstance(exited, dict) and exited.get("pid") == pid and isinstance(exited.get("returncode"), int):
        return exited["returncode"]
    return None


def _how_it_ended(returncode: int) -> str:
    """A worker's exit status in words."""
    if returncode == EXIT_DISK_FULL:
        return "stopped because the disk was full"
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    if name == "SIGKILL":
        return (
            "was killed by SIGKILL (the system's out-of-memory killer does this when memory runs"
            " out, as does kill -9)"
        )
    return f"was killed by {name}"


def _with_position(run: Run, current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``current`` (the run's status, read here unless given) with its place in the queue."""
    current = run.status() if current is None else current
    waiting = _state(current) is RunState.QUEUED
    if waiting and _on_ray(current):
        from core.jobs import ray_backend

        return {**current, "run_id": run.id, "queue_position": None} | {
            "message": ray_backend.waiting_message(run, current)
        }
    position = queue_position(run.id) if waiting else None
    return {**_judged(run, current), "run_id": run.id, "queue_position": position}


def _judged(run: Run, current: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` as the app shows it: ``damaged``, saying what is wrong, when one of the run's
    records cannot be read (a damaged status already says so itself)."""
    damage = [
        problem for path in (run.record_file, run.plan_file, run.metrics_file) if (problem := _damage(path))
    ]
    if not damage or _state(current) is RunState.DAMAGED:
        return dict(current)
    return {**current, "state": RunState.DAMAGED, "message": "; ".join(damage)}


def _row(run: Run, current: Mapping[str, Any], line: list[str]) -> dict[str, Any]:
    """A runs table's row, from the run's status, its place in ``line``, its plan and record."""
    current = _judged(run, current)
    return (
        {"run_id": run.id}
        | {key: current.get(key) for key in ("state", "message", "submitted", "started", "finished")}
        | {"queue_position": line.index(run.id) + 1 if run.id in line else None}
        | _summary(run.plan_file)
        | _summary(run.record_file)
        | {"owner": _owner(run)}
    )


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (row["submitted"] or 0.0, row["run_id"]), reverse=True)


def _summary(path: Path) -> dict[str, Any]:
    """The runs table's fields of a plan, record or metrics file (None where it is missing or
    damaged)."""
    return dict(_parsed(path)[1])


def _damage(path: Path) -> str | None:
    """What is wrong with a plan, record or metrics file; None for a sound or missing one."""
    return _parsed(path)[2]


def _parsed(path: Path) -> tuple[tuple[int, int, int] | None, dict[str, Any], str | None]:
    """A run file's summary fields and damage, parsed only when the file has changed."""
    stamp = _stamp(path)  # before reading: a file replaced in between is read again next time
    cached = _summaries.get(path)
    if cached is None or cached[0] != stamp:
        data = read_run_file(path) if stamp else None
        fields = {
            key: data.get(key) if isinstance(data, dict) else None for key in _SUMMARY_FIELDS[path.name]
        }
        cached = _summaries[path] = (stamp, fields, str(data) if isinstance(data, Damaged) else None)
    return cached


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes whenever ``write_json`` replaces the file, even within one clock tick: its inode."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_ino, info.st_size


def _reconcile(run: Run, gone_state: RunState = RunState.FAILED) -> dict[str, Any]:
    """Finish the status of a run whose worker is gone; kill a worker that hangs or ignores a cancel."""
    current = run.status()
    if not _state(current).active:
        return current
    if _on_ray(current):
        from core.jobs import ray_backend

        return ray_backend.reconcile(run, gone_state)
    keeper = StatusKeeper.take(run)
    kill_reason = None
    if keeper is None:
        kill_reason = _reason_to_kill(run, current)
        if kill_reason is None:
            return current
        # The holder may be another reader recording this run's end, its worker long dead.
        keeper = StatusKeeper.take(run, timeout_s=LOCK_PATIENCE_S)
    if keeper is None:
        pid = current.get("pid")
        if not pid or not queue.is_worker_of(pid, run.directory):
            return current  # whoever holds the lock, that pid is no longer ours to kill
        queue.kill_group(pid)
        keeper = StatusKeeper.take(run, timeout_s=5.0)
        if keeper is None:
            return current
    with keeper:
        if _state(keeper.data).active:  # the worker may have finished meanwhile
            _record_end(keeper, *_verdict(run, keeper.data, gone_state, kill_reason))
            queue.dequeue(run.id)
        return keeper.data


def _record_end(keeper: StatusKeeper, state: RunState, message: str) -> None:
    """Record how a run ended. On a full disk, where not even ``status.json`` can be written,
    the caller still gets the ending, saying so (the disk is most likely why the worker died);
    it is recorded by whoever reconciles the run once space is freed."""
    try:
        keeper.set_state(state, message)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        keeper.data = {**keeper.data, "state": state, "message": f"{one_line(exc)}; {message}"}


def _settle_orphan(directory: Path) -> None:
    """A ticket outlived its worker: record how its run ended, if the run's folder is still there."""
    run = Run(directory)
    if run.status_file.exists():
        _reconcile(run)


def _reason_to_kill(run: Run, current: Mapping[str, Any]) -> str | None:
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        if now - run.cancel_file.stat().st_mtime > CANCEL_GRACE_S:
            return f"the worker ignored the cancel for {CANCEL_GRACE_S:.0f} s"
    beat = current.get("heartbeat") or current.get("submitted")
    if beat and now - beat > HEARTBEAT_TIMEOUT_S:
        return f"the worker stopped responding (no heartbeat for {now - beat:.0f} s) and was killed"
    return None


def _verdict(
    run: Run, current: Mapping[str, Any], gone_state: RunState, kill_reason: str | None
) -> tuple[RunState, str]:
    """The final state and message of a run whose worker is gone."""
    if run.cancel_requested():
        return RunState.CANCELLED, CANCELLED_MESSAGE
    if kill_reason:
        state, reason = RunState.FAILED, kill_reason
    elif gone_state is RunState.INTERRUPTED:
        state = RunState.INTERRUPTED
        reason = f"its worker was gone when the app started (the run was {current['state']})"
    else:
        pid = current.get("pid")
        returncode = _exit_status(run, pid)
        ended = "died without reporting" if returncode is None else _how_it_ended(returncode)
        state, reason = RunState.FAILED, f"the worker (pid {pid}) {ended}"
    tail = run.log_tail()
    return state, f"{reason}; last words: {tail}" if tail else f"{reason}; its log is empty"
