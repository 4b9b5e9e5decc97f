"""``python -m core.jobs.worker RUN_DIR [--target module:function]``: one run, in a process of its own.

``core.jobs.submit`` starts it detached, so the web server stays responsive, a crash stays in
here, and the GPU memory goes back to the system when the process ends. The worker waits for
its turn in the queue, calls the target (``core.training.train:run`` unless told otherwise; tests pass
small targets of their own) as ``target(run_dir, emit)``, and keeps the run's status through its
``StatusKeeper``, heartbeat included. SIGTERM means cancel. Started by hand, it queues like any
submitted run. A plan with ``workers`` above 1 trains on that many processes
(``core.jobs.distributed``) while this one keeps the status.

With ``--ray`` it is a Ray job's entrypoint (``core.jobs.ray_backend``): Ray has placed it, so it
skips the queue, and it holds no ``worker.lock`` (liveness is Ray's job status and the
heartbeat); it first checks that this node runs the submitter's versions.
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

from core import jobs, storage
from core.errors import is_disk_full
from core.jobs import queue
from core.jobs.run import (
    EXIT_DISK_FULL,
    Cancelled,
    Run,
    RunState,
    StatusKeeper,
    TimeLimit,
    run_events,
    state_of,
)

QUEUE_POLL_S = 0.2
# How long a job past its time limit has to clean up before its process is ended.
TIME_LIMIT_GRACE_S = 10.0


def main(argv: list[str] | None = None, *, lock_held_until_exit: bool = False) -> int:
    """Run the job; ``lock_held_until_exit``: the process's own entry point, whose run lock the
    system lets go of only when the process has ended."""
    args = _parser().parse_args(argv)
    storage.keep_caches_home()
    run = Run(Path(args.run_dir).resolve())
    if args.ray:
        keeper: StatusKeeper | None = StatusKeeper(run, -1)
    else:
        keeper = StatusKeeper(run, args.lock_fd) if args.lock_fd is not None else StatusKeeper.take(run)
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
        state = keeper.data.get("state")
        if state not in (None, RunState.QUEUED):
            print(f"run {run.id} is already {state}; submit a new run", file=sys.stderr)
            return 2
        if state is None:
            keeper.set_state(RunState.QUEUED, submitted=time.time())
        keeper.update(pid=os.getpid(), host=platform.node())
        try:
            with keeper.beating(), keeper.outcome(), _traceback_logged():
                if args.ray:
                    from core.jobs import ray_backend

                    ray_backend.check_versions()
                elif not args.unqueued:
                    _wait_for_slot(run, keeper)
                if args.time_limit:
                    _stop_after(args.time_limit, keeper)
                keeper.begin()
                _train(run, keeper, args)
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


def _wait_for_slot(run: Run, keeper: StatusKeeper) -> None:
    """Block until this run is first in line and a slot is free; the slot is held until exit."""
    if run.id not in jobs.waiting_runs():
        queue.enqueue(run.id)
    slots = jobs.max_concurrent()
    while True:
        if run.cancel_requested():
            raise Cancelled
        line = jobs.waiting_runs()
        taken = queue.take_slot(slots) if line[:1] == [run.id] else None
        if taken is not None:
            break
        time.sleep(QUEUE_POLL_S)
    queue.dequeue(run.id)
    slot, _held_until_exit = taken
    gpus = jobs.gpu_ids()
    # One run per GPU: the run in slot k sees only GPU k, as its cuda:0.
    gpu = gpus[slot % len(gpus)] if gpus else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    keeper.update(slot=slot, gpu=gpu)


def _train(run: Run, keeper: StatusKeeper, args: argparse.Namespace) -> None:
    """Call the target here, or for a training plan with several ``workers``, train on that
    many processes: torchrun on this machine, Ray Train under Ray."""
    workers = int(run.plan_fields().get("workers") or 1) if args.target == jobs.DEFAULT_TARGET else 1
    if workers > 1:
        from core.jobs import distributed

        distributed.train(run, workers, on_ray=args.ray)
    else:
        _load_target(args.target)(run.directory, run_events(run, keeper))


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
        if state_of(keeper.data).final:
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one cancel is enough: record it in peace
        raise Cancelled

    return on_sigterm


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.jobs.worker", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run folder, holding plan.json")
    parser.add_argument(
        "--target", default=jobs.DEFAULT_TARGET, help="training entry point as module:function"
    )
    parser.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # passed by core.jobs.submit
    parser.add_argument("--unqueued", action="store_true", help="start at once, beside any training")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS", help="fail the job after this long")
    parser.add_argument("--ray", action="store_true", help="run as a Ray job's entrypoint: no local queue")
    return parser


if __name__ == "__main__":
    sys.exit(main(lock_held_until_exit=True))
