"""The queue and its locks: how worker processes take turns to train, with no daemon to ask.

Files under ``home()/queue`` are the whole mechanism: one numbered ticket per waiting run (first
submitted, first served) and one lock file per slot, held with ``flock`` for as long as a run
trains. The kernel drops a dead process's locks, so a killed worker never keeps its slot, and a
ticket whose worker no longer holds its run's ``worker.lock`` is cleared by whoever next reads
the line.

This layer knows a run only by its folder's ``worker.lock`` and by its worker's process: it
tells that worker from a stranger with a recycled pid, and kills its whole process group. What
a run's status says, and recording how it ended, belong to ``core.jobs``. Like it, this module
never imports torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from core import storage

# The module a worker process runs (``python -m core.jobs.worker``): how we start one, and how we
# tell one of ours from a stranger with a recycled pid before signalling it.
WORKER_MODULE = "core.jobs.worker"


# ---------------------------------------------------------------------------- locks


def try_lock(path: Path) -> int | None:
    """A descriptor holding an exclusive ``flock`` on ``path``, or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def wait_for_lock(path: Path, timeout_s: float) -> int | None:
    """``try_lock``, again and again for up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (fd := try_lock(path)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return fd


def worker_alive(directory: Path) -> bool:
    """Whether the run's worker (or its submitter, until the hand-over) still holds ``worker.lock``."""
    try:
        fd = try_lock(storage.RunFiles(directory).lock_file)
    except FileNotFoundError:  # the run folder itself is gone
        return False
    if fd is not None:
        os.close(fd)
    return fd is None


# ---------------------------------------------------------------------------- tickets and slots


def enqueue(run_id: str) -> None:
    """Take a ticket behind every run already waiting."""
    tickets = _tickets_dir()
    tickets.mkdir(parents=True, exist_ok=True)
    with storage.locked(storage.queue_dir() / "queue.lock"):
        last = max((int(seq) for seq, _ in _tickets()), default=0)
        (tickets / f"{last + 1:09d}-{run_id}").touch()


def dequeue(run_id: str) -> None:
    for seq, waiting in _tickets():
        if waiting == run_id:
            (_tickets_dir() / f"{seq}-{run_id}").unlink(missing_ok=True)


def waiting_runs(on_gone: Callable[[Path], object]) -> list[str]:
    """Ids of the runs waiting for a slot, next in line first.

    A ticket whose worker is gone is cleared, right after ``on_gone`` is handed the run's folder.
    """
    line = []
    for seq, run_id in _tickets():
        directory = storage.runs_dir() / run_id
        if worker_alive(directory):
            line.append(run_id)
            continue
        on_gone(directory)
        (_tickets_dir() / f"{seq}-{run_id}").unlink(missing_ok=True)
    return line


def take_slot(slots: int) -> tuple[int, int] | None:
    """``(slot, locked descriptor)`` for the first free slot of ``slots``, or None if all are taken."""
    folder = storage.queue_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        fd = try_lock(folder / f"slot-{slot}.lock")
        if fd is not None:
            return slot, fd
    return None


# ---------------------------------------------------------------------------- worker processes


def is_worker_of(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is still a ``core.jobs.worker`` of ``directory``, so that signalling it hits no stranger.

    A dead worker's pid may by now belong to anyone. Where there is no ``/proc`` (macOS), ``ps``
    tells; a worker started by hand with a relative folder is then not recognised, and not killed.
    """
    wanted = os.path.realpath(directory)
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self/cmdline").exists():
        try:
            args = [os.fsdecode(arg) for arg in (proc / "cmdline").read_bytes().split(b"\0")]
            cwd = os.readlink(proc / "cwd")
        except OSError:  # gone, a zombie, or someone else's process: not ours in any case
            return False
        folders = [os.path.realpath(os.path.join(cwd, arg)) for arg in args if arg]
    else:
        try:
            command = ["ps", "-o", "command=", "-p", str(pid)]
            ps = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError:  # no ps either: better a hung run than a stranger killed
            return False
        args = folders = ps.stdout.split()  # empty when the pid is gone
    return WORKER_MODULE in args and wanted in folders


def kill_group(pid: int) -> None:
    """SIGKILL the worker ``pid`` and, when it leads its own process group, everything it started."""
    try:
        os.killpg(pid, signal.SIGKILL)  # a submitted worker leads its own group: its children go too
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # a worker started by hand, in someone else's group


# ---------------------------------------------------------------------------- internals


def _tickets_dir() -> Path:
    return storage.queue_dir() / "tickets"


def _tickets() -> list[tuple[str, str]]:
    """``(sequence, run id)`` of every ticket, in queue order."""
    if not _tickets_dir().is_dir():
        return []
    names = sorted(p.name for p in _tickets_dir().iterdir() if re.match(r"^\d{9}-", p.name))
    return [(name[:9], name[10:]) for name in names]
