"""Jobs: submit a plan, and a worker of its own runs it, here or on a cluster.

This is the API the app, the command line and the worker use: submit, status, reconcile,
cancel, the runs table and start-up recovery. There is no daemon. ``submit`` writes the run
folder and hands it to the configured backend (``core.jobs.backend``: local worker processes,
or a Ray cluster), which starts ``python -m core.jobs.worker RUN_DIR`` for it.

``status`` only reads. ``reconcile`` is the one call that looks behind a run's status at its
worker, through the backend the run records: a gone worker's run is finished there, and a
worker that stopped answering, or ignores a cancel, is stopped. The live page calls it every
couple of seconds; listing and start-up recovery call it too. What a job is (its target, its
place beside training) is its row in ``core.jobs.kinds``; who may start one is
``core.jobs.admission``.

This module never imports torch: the web server calls it, and must not initialise CUDA.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from core import storage
from core.access import LOCAL, Viewer
from core.jobs import backend, table
from core.jobs.admission import admitted
from core.jobs.kinds import TRAIN, Job, JobKind
from core.jobs.local import waiting_runs
from core.jobs.run import (
    Run,
    RunNotFound,
    RunRecord,
    RunState,
    RunStatus,
    all_runs,
    create_run,
    is_run_id,
    written_whole,
)
from core.jobs.table import RunRow
from core.limits import LimitExceeded, Limits

_TARGET_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# What callers of this module use from the layers below, by name.
__all__ = ["LimitExceeded", "Run", "RunNotFound", "RunRow", "RunState", "RunStatus", "waiting_runs"]


def submit(
    plan: Mapping[str, Any],
    kind: JobKind = TRAIN,
    *,
    run_id: str | None = None,
    target: str | None = None,
    dataset_name: str | None = None,
    owner: str = "local",
    queued: bool | None = None,
    time_limit_s: float | None = None,
    limits: Limits | None = None,
    files: Mapping[str, bytes] | None = None,
) -> str:
    """Queue ``plan`` as a new job of ``kind`` and start its worker; returns the run id at once.

    ``target`` (``module:function``, called in the worker as ``function(run_dir, emit)``),
    ``queued`` and ``time_limit_s`` default to the kind's; tests pass small targets of their
    own. ``dataset_name`` is what people call the data (an upload's file name); by default the
    data path's last part. ``files`` (name -> bytes) are the job's inputs, written into its
    folder before its worker starts (a zip of images to classify).

    With ``limits``, a job over this instance's limits for ``owner`` is refused with
    ``LimitExceeded`` before anything is written (``core.jobs.admission``); a training run's
    plan is checked against them too.
    """
    target = target or kind.target
    if not _TARGET_PATTERN.match(target):
        raise ValueError(f"target {target!r} is not of the form 'package.module:function'")
    if run_id is not None and not is_run_id(run_id):
        raise ValueError(f"run id {run_id!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    plan = _absolute_paths(json.loads(json.dumps(dict(plan), allow_nan=False)))  # JSON-safe, now
    workers = int(plan.get("workers") or 1) if kind is TRAIN else 1
    job = Job(
        kind,
        target,
        queued=not kind.side if queued is None else queued,
        time_limit_s=time_limit_s or kind.time_limit_s,
        workers=workers,
    )
    runs_on = backend.configured()  # a misconfigured backend is refused before any folder is made
    files = files or {}
    if limits is not None and kind is TRAIN:
        limits.check_plan(int(plan.get("epochs") or 0), plan.get("image_size"))
    adding = sum(map(len, files.values()))
    with admitted(owner, limits, kind=kind, adding=adding) if limits else contextlib.nullcontext():
        return _start(plan, job, runs_on, run_id, dataset_name, owner, files)


def status(run_id: str, viewer: Viewer = LOCAL) -> RunRow:
    """The run as last recorded, with its place in line; ``RunNotFound`` for a run ``viewer``
    may not see.

    It only reads: a run whose worker died still says ``running`` here until ``reconcile``.
    """
    run = Run.open(run_id, viewer)
    return _shown(run, run.status())


def reconcile(run_id: str, viewer: Viewer = LOCAL) -> RunRow:
    """``status`` after settling the run with its worker: a gone worker's run is finished, a
    frozen or cancel-ignoring worker is stopped first."""
    run = Run.open(run_id, viewer)
    return _shown(run, _settled(run))  # on a full disk, an ending status.json lacks


def queue_position(run_id: str) -> int | None:
    """1 for the next run to start, 2 for the one after it...; None when not waiting."""
    line = waiting_runs()
    return line.index(run_id) + 1 if run_id in line else None


def cancel(run_id: str, viewer: Viewer = LOCAL) -> None:
    """Stop a queued or running run: it is marked ``cancelled`` within seconds.

    A finished run stays as it is. A worker that ignores the request past its backend's grace
    is stopped the next time anyone reconciles its run.
    """
    run = Run.open(run_id, viewer)
    current = run.status()
    if not current.state.active:
        return
    with contextlib.suppress(FileExistsError):
        # The request's time is the file's: a second click must not restart the grace period.
        run.cancel_file.open("x").close()
    backend.of_run(current).cancel(run)
    _settled(run)


def list_runs(kind: JobKind = TRAIN, viewer: Viewer = LOCAL) -> list[RunRow]:
    """Every job of ``kind`` that ``viewer`` may see, newest first, with what a runs table
    shows: state, plan summary, best accuracy. A run with a damaged record is ``damaged``, its
    message saying what is wrong.

    Active runs are reconciled first. Plans and metrics are parsed again only when their files
    change, so a long history of finished runs costs a ``stat`` each.
    """
    line = waiting_runs()
    rows = []
    for run in all_runs():
        current = run.status()
        if current.kind is not kind or not table.visible(run, viewer):
            continue
        current = _settled(run) if current.state.active else current
        rows.append(table.row(run, current, table.place_in(line, run)))
    return table.newest_first(rows)


def active_runs(viewer: Viewer = LOCAL) -> list[RunRow]:
    """The queued and running training runs ``viewer`` may see, newest first, as ``list_runs``
    shows them.

    Cheap enough for every rerun of every page: besides each ``status.json``, it reads only the
    plans of active runs, and checks only their workers.
    """
    active = [
        run
        for run in all_runs()
        if (current := run.status()).state.active and current.kind is TRAIN and table.visible(run, viewer)
    ]
    if not active:
        return []
    line = waiting_runs()
    rows = [table.row(run, _settled(run), table.place_in(line, run)) for run in active]
    return table.newest_first([row for row in rows if row.state.active])


def recover() -> list[str]:
    """Mark runs whose worker is gone as ``interrupted``; the app calls this once at start-up.

    Workers outlive the server (they run in sessions of their own, or on a cluster), so a run
    whose worker still lives keeps going and is left alone. Returns the ids of the runs marked.
    """
    marked = [
        run.id
        for run in all_runs()
        if run.status().state.active
        and _settled(run, gone_state=RunState.INTERRUPTED).state is RunState.INTERRUPTED
    ]
    waiting_runs()  # clears tickets whose run folder is gone
    return marked


# ---------------------------------------------------------------------------- internals


def _start(
    plan: dict[str, Any],
    job: Job,
    runs_on: backend.Backend,
    run_id: str | None,
    dataset_name: str | None,
    owner: str,
    files: Mapping[str, bytes],
) -> str:
    """Write the run folder whole, then hand it to ``runs_on``."""
    run, keeper = create_run(run_id)
    with keeper:  # our copy of the lock goes at the end: the worker holds its own from then on
        with written_whole(run):  # a full disk leaves no half-written run
            storage.write_json(run.plan_file, plan)
            for file_name, content in files.items():
                storage.write_bytes_atomic(run.directory / file_name, content)
            name = dataset_name or Path(str(plan.get("data", "")).rstrip("/")).name
            record = RunRecord(
                owner=owner, kind=job.kind, dataset_name=name, backend=runs_on.name, created=time.time()
            )
            run.write_record(record)
            keeper.set_state(
                RunState.QUEUED,
                pid=None,
                heartbeat=None,
                submitted=time.time(),
                kind=job.kind,
                **runs_on.status_fields(),
            )
        runs_on.submit(run, keeper, job)
    return run.id


def _settled(run: Run, gone_state: RunState = RunState.FAILED) -> RunStatus:
    """The run's status after its backend has looked behind it at its worker."""
    current = run.status()
    if not current.state.active:
        return current
    return backend.of_run(current).settle(run, gone_state)


def _shown(run: Run, current: RunStatus) -> RunRow:
    """``current`` as the app shows it: its row, with what its backend says of its wait."""
    if current.state is not RunState.QUEUED:
        return table.row(run, current, None)
    wait = backend.of_run(current).waiting(run, current)
    return table.row(run, replace(current, message=wait.message or current.message), wait.queue_position)


def _absolute_paths(plan: dict[str, Any]) -> dict[str, Any]:
    """Data and weights given relative to the submitter's folder, made absolute: the worker
    runs in the run's own folder, where a relative path would name something else."""
    for key in ("data", "weights"):
        value = plan.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and Path(value).exists():
            plan[key] = str(Path(value).resolve())
    return plan
