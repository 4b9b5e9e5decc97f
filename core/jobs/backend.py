"""The jobs backend: the one seam between the jobs API and whatever runs the workers.

``local`` (the default, nothing to install or start) runs each job in a worker process of this
machine, queued through the file locks of ``core.jobs.queue`` (``core.jobs.local``). ``ray``
submits each job to an existing Ray cluster, which places it by GPU and CPU
(``core.jobs.ray_backend``). Both run the same worker, ``python -m core.jobs.worker``, on the
same run folder; they differ in how it is started, how its liveness is told, how it is stopped
and what a waiting run says, which is what ``Backend`` names.

``configured()`` says where new jobs go. Every run records in its ``status.json`` the backend
(and address) that runs it, so that a server switched from one to the other still settles the
runs it started before: ``of_run`` reads that, never the configuration. Both look the backend up
by name in one table, and return the backend object; callers dispatch through it and never ask
which one it is. A third backend is one module implementing ``Backend`` and one row in that table.

This module never imports Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from core import storage, tracking
from core.errors import TransferLabError

if TYPE_CHECKING:
    from core.jobs.kinds import Job
    from core.jobs.run import Run, RunState, RunStatus, StatusKeeper

BACKEND_ENV = "TRANSFER_LAB_BACKEND"
LOCAL = "local"
RAY = "ray"

# A worker's heartbeat comes from a thread of its own, so only a frozen process misses it for
# this long; a busy training step does not.
HEARTBEAT_TIMEOUT_S = 60.0
# How long a reader waits for a busy ``worker.lock`` before it considers the worker's end its
# own to record: long enough for another reader, who holds it only while recording, to finish.
LOCK_PATIENCE_S = 0.5


class BackendError(TransferLabError, RuntimeError):
    """A jobs backend that is misconfigured, not installed, or out of reach."""


@dataclass(frozen=True)
class Waiting:
    """What a backend says of a queued run's wait: its place in line (None where the backend
    keeps no line), and a message where it has more to say than the status does."""

    queue_position: int | None = None
    message: str | None = None


class Backend(Protocol):
    """What runs jobs. The server side (``submit``, ``settle``, ``cancel``, ``waiting``) is
    called by ``core.jobs``; the worker side (``keeper``, ``prepare``, ``launch_ranks``) by the
    worker process the backend started. None of it may import torch or initialise CUDA."""

    name: str

    @classmethod
    def configured(cls) -> Backend:
        """This backend for new jobs, set up as the environment says, checked: a bad setting is
        a ``BackendError`` naming the remedy, raised before any run folder is made."""
        ...

    @classmethod
    def of_status(cls, status: RunStatus) -> Backend:
        """This backend as ``status`` records it (``status_fields``): the one that runs that run."""
        ...

    def status_fields(self) -> dict[str, str]:
        """What ``status.json`` records about where a run runs: enough for ``of_run``."""
        ...

    def submit(self, run: Run, keeper: StatusKeeper, job: Job) -> None:
        """Start ``job``'s worker on the written ``run`` (``keeper`` holds its lock until this
        returns); a refusal fails the run, saying why, and is raised."""
        ...

    def settle(self, run: Run, gone_state: RunState) -> RunStatus:
        """The active ``run``'s status after looking behind it at its worker: a gone worker's run
        is finished (``gone_state`` unless its end is known), a frozen one is stopped and failed."""
        ...

    def cancel(self, run: Run) -> None:
        """Ask the run's worker to stop; ``settle`` records the end."""
        ...

    def waiting(self, run: Run, current: RunStatus) -> Waiting:
        """For a queued run: what the backend says of its wait."""
        ...

    def keeper(self, run: Run, lock_fd: int | None) -> StatusKeeper | None:
        """In the worker: the keeper of the run's status (None: another worker runs it)."""
        ...

    def prepare(self, run: Run, keeper: StatusKeeper, *, queued: bool) -> None:
        """In the worker, before the job starts: wait for its turn, or check this node."""
        ...

    def launch_ranks(self, run: Run, workers: int) -> None:
        """In the worker: train ``run``'s plan on ``workers`` processes, returning once rank 0
        has written the run."""
        ...


def backends() -> dict[str, type[Backend]]:
    """Every backend, by the name ``TRANSFER_LAB_BACKEND`` and a run's status give it."""
    # The backends import this module for its error and timings: they are imported when asked for.
    from core.jobs.local import LocalBackend
    from core.jobs.ray_backend import RayBackend

    return {LOCAL: LocalBackend, RAY: RayBackend}


def configured() -> Backend:
    """The backend ``TRANSFER_LAB_BACKEND`` names (``local`` by default), as it configures itself:
    a name no backend has, or a bad setting of the one named, is one line naming the remedy."""
    name = os.environ.get(BACKEND_ENV, "").strip().lower() or LOCAL
    named = backends()
    if name not in named:
        others = " or ".join(repr(other) for other in named if other != LOCAL)
        raise BackendError(f"{BACKEND_ENV}={name!r}: expected {LOCAL!r} (the default) or {others}")
    return named[name].configured()


def of_run(status: RunStatus) -> Backend:
    """The backend that runs a run, as its ``status.json`` records it (runs from before the
    backends existed ran locally)."""
    named = backends()
    return named.get(status.backend, named[LOCAL]).of_status(status)


def worker_environment() -> dict[str, str]:
    """What every backend's worker is given: this home, this code first on its path, an
    unbuffered log, so that the log holds the last words of a worker that is killed, and the
    MLflow server the app mirrors its runs to."""
    path = os.pathsep.join(filter(None, [str(storage.CODE_ROOT), os.environ.get("PYTHONPATH")]))
    given = {storage.HOME_ENV: str(storage.home()), "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    if os.environ.get(tracking.MLFLOW_URI_ENV):  # a Ray node has its own environment
        given[tracking.MLFLOW_URI_ENV] = os.environ[tracking.MLFLOW_URI_ENV]
    return given
