"""Admission: whether an owner may start another job, within this instance's limits.

Every kind of job is admitted here, before anything of it is written: at most
``max_active_runs`` of an owner's jobs of every kind queued or running, at most
``max_side_jobs`` side jobs (``JobKind.side``) running on the instance, and nothing new over the
owner's disk quota. The checks and what the admitted block writes happen under one lock, so that
people submitting at the same moment are counted and charged one after the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from core import storage
from core.jobs import usage
from core.jobs.kinds import TRAIN, JobKind
from core.jobs.run import all_runs
from core.jobs.table import owner_of
from core.limits import LimitExceeded, Limits, human_bytes


@contextlib.contextmanager
def admitted(
    owner: str, limits: Limits, runs: int = 1, *, kind: JobKind = TRAIN, adding: int = 0
) -> Iterator[None]:
    """Let ``owner`` start ``runs`` jobs of ``kind`` within ``limits``, or raise ``LimitExceeded``
    naming the limit; ``adding``: the bytes this job brings, such as an uploaded zip."""
    with storage.locked(storage.queue_dir() / "admission.lock"):
        _check_active_jobs(owner, limits, runs)
        if kind.side:
            _check_side_jobs(limits, runs)
        _check_quota(owner, limits, adding)
        yield


def active_jobs(owner: str) -> int:
    """How many of ``owner``'s jobs, of every kind, are queued or running: what
    ``max_active_runs`` counts."""
    return sum(1 for run in all_runs() if run.status().state.active and owner_of(run) == owner)


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
    running = sum(1 for run in all_runs() if (status := run.status()).state.active and status.kind.side)
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
