"""The jobs backend: the one seam between the jobs API and whatever runs the workers.

``local`` (the default, nothing to install or start) runs each job in a worker process of this
machine, queued through the file locks of ``core.jobs.queue`` (``core.jobs.local``). ``ray``
submits each job to an existing Ray cluster, which places it by GPU and CPU
(``core.jobs.ray_backend``). Both run the same worker, ``python -m core.jobs.worker``, on the
same run folder; they differ in how it is started, how its liveness is told, how it is stopped
and what a waiting run says, which is what ``Backend`` names.

``configured()`` says where new jobs go. Every run records in its ``status.json`` the backend
(and address) that runs it, so that a server switched from one to the other still settles the
runs it started before: ``of_run`` reads that, never the configuration. Both return the backend
object; callers dispatch through it and never ask which one it is.

This module never imports Ray: it only checks that it could be imported.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from core import storage, tracking
from core.errors import TransferLabError

if TYPE_CHECKING:
    from core.jobs.kinds import Job
    from core.jobs.run import Run, RunState, RunStatus, StatusKeeper

BACKEND_ENV = "TRANSFER_LAB_BACKEND"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
LOCAL = "local"
RAY = "ray"
RAY_INSTALL = "pip install -r requirements-ray.txt"

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


def configured() -> Backend:
    """``TRANSFER_LAB_BACKEND`` (``local`` by default, or ``ray`` with ``RAY_ADDRESS``), checked:
    a bad value, a missing address or Ray not installed is one line naming the remedy."""
    # The backends import this module for its error and timings: they are imported when chosen.
    from core.jobs.local import LocalBackend, max_concurrent
    from core.jobs.ray_backend import RayBackend

    name = os.environ.get(BACKEND_ENV, "").strip().lower() or LOCAL
    if name == LOCAL:
        max_concurrent()  # a bad TRANSFER_LAB_MAX_RUNS is refused here, not in the worker
        return LocalBackend()
    if name != RAY:
        raise BackendError(f"{BACKEND_ENV}={name!r}: expected {LOCAL!r} (the default) or {RAY!r}")
    if importlib.util.find_spec("ray") is None:
        raise BackendError(f"{BACKEND_ENV}=ray needs Ray, which is not installed here: {RAY_INSTALL}")
    address = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    if not address:
        raise BackendError(
            f"{BACKEND_ENV}=ray needs {RAY_ADDRESS_ENV}, the Ray dashboard's address (http://HEAD:8265)"
        )
    if not address.startswith(("http://", "https://")):
        # Ray itself reads RAY_ADDRESS, and takes a bare host:port for its internal (GCS) address.
        raise BackendError(
            f"{RAY_ADDRESS_ENV}={address!r}: give the Ray dashboard's address, such as http://HEAD:8265"
        )
    return RayBackend(address)


def of_run(status: RunStatus) -> Backend:
    """The backend that runs a run, as its ``status.json`` records it (runs from before the
    backends existed ran locally)."""
    from core.jobs.local import LocalBackend
    from core.jobs.ray_backend import RayBackend

    if status.backend == RAY:
        return RayBackend(status.address or "")
    return LocalBackend()


def worker_environment() -> dict[str, str]:
    """What every backend's worker is given: this home, this code first on its path, an
    unbuffered log, so that the log holds the last words of a worker that is killed, and the
    MLflow server the app mirrors its runs to."""
    path = os.pathsep.join(filter(None, [str(storage.CODE_ROOT), os.environ.get("PYTHONPATH")]))
    given = {storage.HOME_ENV: str(storage.home()), "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    if os.environ.get(tracking.MLFLOW_URI_ENV):  # a Ray node has its own environment
        given[tracking.MLFLOW_URI_ENV] = os.environ[tracking.MLFLOW_URI_ENV]
    return given
