"""The local jobs backend: each job's worker is a process of this machine.

``submit`` starts ``python -m core.jobs.worker RUN_DIR`` detached, in a session of its own, so
that it outlives the server and a cancel can stop its whole process group. Training workers
then take turns through the tickets and slot locks of ``core.jobs.queue``, one run per slot and
one slot per GPU; side jobs start at once.

Liveness is the run's ``worker.lock``: the worker holds it for as long as its process lives, so
whoever can take it knows the worker is gone, pid reuse or not, and is the only one allowed to
record how the run ended. A worker that stopped answering, or ignores a cancel, is killed by
whoever settles its run. The server reaps the workers it started, so that a worker killed
outright (kill -9, the out-of-memory killer) still leaves its exit status for its final state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import is_disk_full, one_line
from core.jobs import backend, hardware, queue
from core.jobs.kinds import Job
from core.jobs.run import (
    CANCELLED_MESSAGE,
    EXIT_DISK_FULL,
    Cancelled,
    Run,
    RunState,
    RunStatus,
    StatusKeeper,
)
from core.storage import read_record, write_json

MAX_RUNS_ENV = "TRANSFER_LAB_MAX_RUNS"
# How long a worker may take to honour SIGTERM before it is killed outright.
CANCEL_GRACE_S = 10.0
# How long a reader waits to reap a worker it saw die (the server started it) for its exit status.
REAP_PATIENCE_S = 2.0
QUEUE_POLL_S = 0.2

# The workers this process started, by run folder, until each one's exit.json is written.
_workers: dict[Path, subprocess.Popen] = {}


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


def waiting_runs() -> list[str]:
    """Ids of the runs waiting for a slot, next in line first; a dead worker's run is finished."""
    return queue.waiting_runs(on_gone=_settle_orphan)


@dataclass(frozen=True)
class LocalBackend:
    """Worker processes of this machine, queued for its slots and GPUs."""

    name: str = backend.LOCAL

    @classmethod
    def configured(cls) -> LocalBackend:
        max_concurrent()  # a bad TRANSFER_LAB_MAX_RUNS is refused here, not in the worker
        return cls()

    @classmethod
    def of_status(cls, status: RunStatus) -> LocalBackend:
        return cls()

    def status_fields(self) -> dict[str, str]:
        return {"backend": self.name}

    def submit(self, run: Run, keeper: StatusKeeper, job: Job) -> None:
        if job.queued:
            queue.enqueue(run.id)
        try:
            _start_worker(run, job, keeper.lock_fd)
        except OSError as exc:
            queue.dequeue(run.id)
            keeper.set_state(RunState.FAILED, f"could not start the worker: {exc}")
            raise

    def settle(self, run: Run, gone_state: RunState) -> RunStatus:
        current = run.status()
        keeper = StatusKeeper.take(run)
        kill_reason = None
        if keeper is None:
            kill_reason = _reason_to_kill(run, current)
            if kill_reason is None:
                return current
            # The holder may be another reader recording this run's end, its worker long dead.
            keeper = StatusKeeper.take(run, timeout_s=backend.LOCK_PATIENCE_S)
        if keeper is None:
            pid = current.pid
            if not pid or not queue.is_worker_of(pid, run.directory):
                return current  # whoever holds the lock, that pid is no longer ours to kill
            queue.kill_group(pid)
            keeper = StatusKeeper.take(run, timeout_s=5.0)
            if keeper is None:
                return current
        with keeper:
            if keeper.status.state.active:  # the worker may have finished meanwhile
                _record_end(keeper, *_final_state(run, keeper.status, gone_state, kill_reason))
                queue.dequeue(run.id)
            return keeper.status

    def cancel(self, run: Run) -> None:
        pid = run.status().pid
        if pid and queue.is_worker_of(pid, run.directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def waiting(self, run: Run, current: RunStatus) -> backend.Waiting:
        line = waiting_runs()
        return backend.Waiting(queue_position=line.index(run.id) + 1 if run.id in line else None)

    def keeper(self, run: Run, lock_fd: int | None) -> StatusKeeper | None:
        return StatusKeeper(run, lock_fd) if lock_fd is not None else StatusKeeper.take(run)

    def prepare(self, run: Run, keeper: StatusKeeper, *, queued: bool) -> None:
        if queued:
            _wait_for_slot(run, keeper)

    def launch_ranks(self, run: Run, workers: int) -> None:
        from core.jobs import distributed

        distributed.with_torchrun(run, workers)


# ---------------------------------------------------------------------------- the worker's side


def _wait_for_slot(run: Run, keeper: StatusKeeper) -> None:
    """Block until this run is first in line and a slot is free; the slot is held until exit."""
    if run.id not in waiting_runs():
        queue.enqueue(run.id)
    try:
        slot = _first_free_slot(run)
    finally:
        # Out of the line before a cancel is recorded: a run that says it is cancelled has left.
        queue.dequeue(run.id)
    gpus = gpu_ids()
    # One run per GPU: the run in slot k sees only GPU k, as its cuda:0.
    gpu = gpus[slot % len(gpus)] if gpus else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    keeper.update(slot=slot, gpu=gpu)


def _first_free_slot(run: Run) -> int:
    """The slot this run takes once it is first in line; its lock is held until the process exits."""
    slots = max_concurrent()
    while True:
        if run.cancel_requested():
            raise Cancelled
        if waiting_runs()[:1] == [run.id] and (taken := queue.take_slot(slots)) is not None:
            return taken[0]
        time.sleep(QUEUE_POLL_S)


# ---------------------------------------------------------------------------- the server's side


def _start_worker(run: Run, job: Job, lock_fd: int) -> None:
    command = [sys.executable, *job.worker_arguments(run.directory), "--lock-fd", str(lock_fd)]
    with open(run.log_file, "ab") as log:
        worker = subprocess.Popen(
            command,
            cwd=run.directory,  # whatever the run writes by relative path stays in its folder
            env={**os.environ, **backend.worker_environment()},
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
    written (the disk may be full) the worker stays in ``_workers``, where ``_final_state`` asks it."""
    returncode = worker.wait()
    with contextlib.suppress(OSError):  # the run's folder may be gone, or the disk full
        write_json(run.exit_file, {"pid": worker.pid, "returncode": returncode})
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


def _record_end(keeper: StatusKeeper, state: RunState, message: str) -> None:
    """Record how a run ended. On a full disk, where not even ``status.json`` can be written,
    the caller still gets the ending, saying so (the disk is most likely why the worker died);
    it is recorded by whoever settles the run once space is freed."""
    try:
        keeper.set_state(state, message)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        keeper.status = replace(keeper.status, state=state, message=f"{one_line(exc)}; {message}")


def _settle_orphan(directory: Path) -> None:
    """A ticket outlived its worker: record how its run ended, if the run's folder is still there."""
    run = Run(directory)
    if run.status_file.exists() and run.status().state.active:
        LocalBackend().settle(run, RunState.FAILED)


def _reason_to_kill(run: Run, current: RunStatus) -> str | None:
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        if now - run.cancel_file.stat().st_mtime > CANCEL_GRACE_S:
            return f"the worker ignored the cancel for {CANCEL_GRACE_S:.0f} s"
    beat = current.heartbeat or current.submitted
    if beat and now - beat > backend.HEARTBEAT_TIMEOUT_S:
        return f"the worker stopped responding (no heartbeat for {now - beat:.0f} s) and was killed"
    return None


def _final_state(
    run: Run, current: RunStatus, gone_state: RunState, kill_reason: str | None
) -> tuple[RunState, str]:
    """The final state and message of a run whose worker is gone."""
    if run.cancel_requested():
        return RunState.CANCELLED, CANCELLED_MESSAGE
    if kill_reason:
        state, reason = RunState.FAILED, kill_reason
    elif gone_state is RunState.INTERRUPTED:
        state = RunState.INTERRUPTED
        reason = f"its worker was gone when the app started (the run was {current.state})"
    else:
        pid = current.pid
        returncode = _exit_status(run, pid)
        ended = "died without reporting" if returncode is None else _how_it_ended(returncode)
        state, reason = RunState.FAILED, f"the worker (pid {pid}) {ended}"
    tail = run.log_tail()
    return state, f"{reason}; last words: {tail}" if tail else f"{reason}; its log is empty"
