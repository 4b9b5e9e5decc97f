"""Which jobs backend runs new jobs, chosen by configuration: the seam another engine plugs into.

``local`` (the default, nothing to install or start) runs each job in a worker process of this
machine, queued through the file locks of ``core.jobs.queue``. ``ray`` submits each job to an
existing Ray cluster (``core.jobs.ray_backend``), which places it by GPU and CPU. Every run
records in its ``status.json`` the backend (and address) that runs it, so that a server switched
from one to the other still settles the runs it started before: ``of_run`` reads that, never the
configuration.

This module never imports Ray: it only checks that it could be imported.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import TransferLabError

BACKEND_ENV = "TRANSFER_LAB_BACKEND"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
LOCAL = "local"
RAY = "ray"
RAY_INSTALL = "pip install -r requirements-ray.txt"


class BackendError(TransferLabError, RuntimeError):
    """A jobs backend that is misconfigured, not installed, or out of reach."""


@dataclass(frozen=True)
class Backend:
    """The backend new jobs go to: its name, and for Ray the dashboard's address."""

    name: str = LOCAL
    address: str | None = None

    def status_fields(self) -> dict[str, Any]:
        """What ``status.json`` records about where a run runs."""
        return {"backend": self.name} | ({"address": self.address} if self.address else {})


def configured() -> Backend:
    """``TRANSFER_LAB_BACKEND`` (``local`` by default, or ``ray`` with ``RAY_ADDRESS``), checked:
    a bad value, a missing address or Ray not installed is one line naming the remedy."""
    name = os.environ.get(BACKEND_ENV, "").strip().lower() or LOCAL
    if name == LOCAL:
        return Backend()
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
    return Backend(RAY, address)


def of_run(status: Mapping[str, Any]) -> Backend:
    """The backend that runs a run, as its ``status.json`` records it (runs from before the
    backends existed ran locally)."""
    return Backend(status.get("backend") or LOCAL, status.get("address"))
