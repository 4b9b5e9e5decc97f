"""``python -m core.jobs.worker RUN_DIR [--target module:function]``: one run, in a process of its own.

``core.jobs.submit`` starts it detached, so the web server stays responsive, a crash stays in
here, and the GPU memory goes back to the system when the process ends. The worker waits for
its turn in the queue, calls the target (``core.training.train:run`` unless told otherwise; tests pass
small targets of their own) as ``target(run_dir, emit)``, and keeps the run's status through its
``StatusKeeper``, heartbeat included. SIGTERM means cancel. Started by hand, it queues like any
submitted run. A plan with ``workers`` above 1 trains on that many processes
(``core.jobs.distributed``) while this one keeps the status.

The run's ``status.json`` names the backend that started it (``core.jobs.backend.of_run``), which
keeps the status and prepares the job: the local backend's worker holds the run's lock and
waits for a slot; a Ray job's entrypoint holds no lock (liveness is Ray's job status and the
heartbeat) and checks that its node runs the submitter's versions.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core import storage
from core.errors import is_disk_full
from core.jobs import backend, kinds, queue
from core.jobs.run import (
    EXIT_DISK_FULL,
    Cancelled,
    Run,
    RunState,
    StatusKeeper,
    TimeLimit,
    run_events,
)
from core.tracking import TrackedRun, Tracking, mirrored

# How long a job past its time limit has to clean up before its process is ended.
TIME_LIMIT_GRACE_S = 10.0


def main(argv: list[str] | None = None, *, lock_held_until_exit: bool = False) -> int:
    """Run the job; ``lock_held_until_exit``: the process's own entry point, whose run lock the
    system lets go of only when the process has ended."""
    args = _parser().parse_args(argv)
    storage.keep_caches_home()
    run = Run(Path(args.run_dir).resolve())
    runs_on = backend.of_run(run.status())
    keeper = runs_on.keeper(run, args.lock_fd)
    if keeper is None:
        raise SystemExit(f"another worker already runs {run.directory}")
    if keeper.lock_fd >= 0:
        os.set_inheritable(keeper.lock_fd, False)  # a program the training starts must not keep it alive
        if lock_held_until_exit:
            # A second descriptor of the same flock, never closed: the keeper lets go of its own
            # once the outcome is recorded, but a reader that finds the lock free takes the worker
            # for ended and asks for its exit status, and ending a process that loaded torch can
            # take seconds on a busy machine.
            os.dup(keeper.lock_fd)
    signal.signal(signal.SIGTERM, _cancel_until_ended(keeper))
    with keeper:
        if keeper.status.state is not RunState.QUEUED:
            print(f"run {run.id} is already {keeper.status.state}; submit a new run", file=sys.stderr)
            return 2
        if keeper.status.submitted is None:  # no submitter wrote its status: a folder made by hand
            keeper.set_state(RunState.QUEUED, submitted=time.time())
        keeper.update(pid=os.getpid(), host=platform.node())
        try:
            with keeper.beating(), keeper.outcome(), _traceback_logged():
                if run.cancel_requested():  # cancelled before this process wrote its pid to signal
                    raise Cancelled
                runs_on.prepare(run, keeper, queued=not args.unqueued)
                if args.time_limit:
                    _stop_after(args.time_limit, keeper)
                keeper.begin()
                _train(run, keeper, args.target, runs_on)
        except Cancelled:
            return 0
        except TimeLimit:
            return 1
        except BaseException as exc:  # noqa: BLE001 - the worker exists to record how a run ended, however it did
            if run.cancel_requested():
                return 0  # a cancel may surface as another exception
            # A full disk may keep the outcome from being recorded: the exit status still says why.
            return EXIT_DISK_FULL if is_disk_full(exc) else 1
        finally:
            queue.dequeue(run.id)
    return 0


@contextlib.contextmanager
def _traceback_logged() -> Iterator[None]:
    """Print an error's traceback to the log before the status says ``failed``, so that whoever
    reads the failed status finds the traceback there already."""
    try:
        yield
    except Exception:
        traceback.print_exc()
        raise


def _train(run: Run, keeper: StatusKeeper, target: str, runs_on: backend.Backend) -> None:
    """Call the target here, or for a training plan with several ``workers``, have the backend
    train it on that many processes (whose rank 0 mirrors it to the trackers)."""
    training = keeper.status.kind is kinds.TRAIN
    workers = int(run.plan_fields().get("workers") or 1) if training else 1
    if workers > 1:
        runs_on.launch_ranks(run, workers)
        return
    tracking = Tracking.configured() if training else Tracking()
    with mirrored(tracking, TrackedRun(run.directory, run.record().owner), run_events(run, keeper)) as emit:
        _load_target(target)(run.directory, emit)


def _load_target(spec: str) -> Callable[..., Any]:
    module_name, _, function = spec.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _stop_after(seconds: float, keeper: StatusKeeper) -> None:
    """Once ``seconds`` have passed, fail the run, then stop it.

    A watchdog thread records the outcome before anything is interrupted: a signal landing in C
    code (an import of torch, a decoder) may kill the process outright, and the run must still
    say why it ended. SIGALRM then raises ``TimeLimit`` in the main thread, so that the job's
    own clean-up runs; a main thread that does not end within ``TIME_LIMIT_GRACE_S`` (blocked in
    C, or swallowing the exception) is ended here.
    """
    message = f"stopped after {seconds:g} s, the time limit for this job"

    def time_up(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        raise TimeLimit(message)

    def watchdog() -> None:
        if not keeper.finish(RunState.FAILED, message):
            return  # the run ended first
        signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)
        time.sleep(TIME_LIMIT_GRACE_S)
        os._exit(1)

    signal.signal(signal.SIGALRM, time_up)
    timer = threading.Timer(seconds, watchdog)
    timer.daemon = True
    timer.start()


def _cancel_until_ended(keeper: StatusKeeper) -> Callable[[int, Any], None]:
    """SIGTERM's handler: a cancel while the run goes on; nothing once its outcome is recorded,
    while the worker finishes up and exits."""

    def on_sigterm(signum: int, frame: Any) -> None:
        if keeper.status.state.final:
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one cancel is enough: record it in peace
        raise Cancelled

    return on_sigterm


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.jobs.worker", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run folder, holding plan.json")
    parser.add_argument(
        "--target", default=kinds.TRAIN.target, help="training entry point as module:function"
    )
    parser.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # passed by core.jobs.submit
    parser.add_argument("--unqueued", action="store_true", help="start at once, beside any training")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS", help="fail the job after this long")
    # Ray jobs submitted by earlier versions name their backend on the command line; the run's
    # status says it now, so a job still pending across an upgrade starts rather than fails.
    parser.add_argument("--ray", action="store_true", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main(lock_held_until_exit=True))
