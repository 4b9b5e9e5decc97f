"""``python -m core.worker RUN_DIR [--target module:function]``: one run, in a process of its own.

``core.jobs.submit`` starts it detached, so the web server stays responsive, a crash stays in
here, and the GPU memory goes back to the system when the process ends. The worker waits for
its turn in the queue, calls the target (``core.train:run`` unless told otherwise; tests pass
small targets of their own) as ``target(run_dir, emit)``, and keeps ``status.json`` current,
heartbeat included. SIGTERM means cancel. Started by hand, it queues like any submitted run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import jobs, queue
from core.errors import one_line
from core.events import EventLog
from core.runs import STATUS_FILE, read_json, write_json

QUEUE_POLL_S = 0.2


class Cancelled(BaseException):
    """Raised in the main thread on SIGTERM.

    A BaseException, like KeyboardInterrupt, so that a training loop's ``except Exception``
    cannot swallow a cancel.
    """


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    directory = Path(args.run_dir).resolve()
    _hold_run_lock(directory, args.lock_fd)
    signal.signal(signal.SIGTERM, _on_sigterm)
    status = _StatusFile(directory)
    if status.data.get("state") not in (None, "queued"):
        print(f"run {directory.name} is already {status.data['state']}; submit a new run", file=sys.stderr)
        return 2
    if "state" not in status.data:
        status.set_state("queued", submitted=time.time())
    status.update(pid=os.getpid(), heartbeat=time.time())
    heartbeat = _Heartbeat(status)
    heartbeat.start()
    try:
        state, message = _run(directory, args.target, status)
    finally:
        heartbeat.halt()
        queue.dequeue(directory.name)
    status.set_state(state, message)
    return 1 if state == "failed" else 0


def _run(directory: Path, target: str, status: _StatusFile) -> tuple[str, str]:
    """Wait for a slot, train, and say how it ended."""
    try:
        _wait_for_slot(directory, status)
        status.set_state("running", started=time.time())
        _load_target(target)(directory, EventLog(directory))
        return "done", ""
    except Cancelled:
        return "cancelled", jobs.CANCELLED_MESSAGE
    except BaseException as exc:  # noqa: BLE001 - the worker exists to record how a run ended, however it did
        if jobs.cancel_requested(directory):  # the cancel surfaced as another exception
            return "cancelled", jobs.CANCELLED_MESSAGE
        traceback.print_exc()
        return "failed", one_line(exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the outcome is decided: record it in peace


def _wait_for_slot(directory: Path, status: _StatusFile) -> None:
    """Block until this run is first in line and a slot is free; the slot is held until exit."""
    run_id = directory.name
    if run_id not in jobs.waiting_runs():
        queue.enqueue(run_id)
    slots = jobs.max_concurrent()
    while True:
        if jobs.cancel_requested(directory):
            raise Cancelled
        line = jobs.waiting_runs()
        taken = queue.take_slot(slots) if line[:1] == [run_id] else None
        if taken is not None:
            break
        time.sleep(QUEUE_POLL_S)
    queue.dequeue(run_id)
    slot, _held_until_exit = taken
    gpus = jobs.gpu_ids()
    # One run per GPU: the run in slot k sees only GPU k, as its cuda:0.
    gpu = gpus[slot % len(gpus)] if gpus else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    status.update(slot=slot, gpu=gpu)


def _load_target(spec: str) -> Callable[..., Any]:
    module_name, _, function = spec.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one cancel is enough: record it in peace
    raise Cancelled


def _hold_run_lock(directory: Path, lock_fd: int | None) -> None:
    """Keep ``worker.lock`` locked until exit: while it is, everyone knows this worker lives."""
    if lock_fd is None:  # started by hand rather than by submit
        lock_fd = queue.try_lock(directory / queue.WORKER_LOCK)
        if lock_fd is None:
            raise SystemExit(f"another worker already runs {directory}")
    os.set_inheritable(lock_fd, False)  # a program the training starts must not keep it alive


class _StatusFile:
    """``status.json`` as this worker keeps it; the main thread and the heartbeat share it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data: dict[str, Any] = read_json(directory / STATUS_FILE, {})
        self._lock = threading.Lock()

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
            write_json(self.directory / STATUS_FILE, self.data)

    def set_state(self, state: str, message: str = "", **fields: Any) -> None:
        with self._lock:
            self.data = jobs.record_state(self.directory, {**self.data, **fields}, state, message)


class _Heartbeat(threading.Thread):
    """Stamps ``heartbeat`` every couple of seconds, whatever the main thread is busy with."""

    def __init__(self, status: _StatusFile) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self._status = status
        self._halted = threading.Event()

    def run(self) -> None:
        while not self._halted.wait(jobs.HEARTBEAT_INTERVAL_S):
            self._status.update(heartbeat=time.time())

    def halt(self) -> None:
        self._halted.set()
        self.join()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.worker", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run folder, holding plan.json")
    parser.add_argument(
        "--target", default=jobs.DEFAULT_TARGET, help="training entry point as module:function"
    )
    parser.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # passed by core.jobs.submit
    return parser


if __name__ == "__main__":
    sys.exit(main())
