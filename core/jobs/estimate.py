"""The epoch-time estimate, timed on the kind of machine that would train the run.

Timing two batches on the web server would describe the web server, and would cost it the
memory and CPU of a training step. The estimate is a short job of its own (``core.jobs.kinds.ESTIMATE``,
kept out of the runs table), admitted like every job, whose worker times the plan where runs
train (this machine, or a Ray node) and writes the estimate to ``result.json``. Torch is imported only where the
timing happens: the web server imports this package.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core import access, jobs
from core.access import Viewer
from core.jobs.kinds import ESTIMATE
from core.jobs.run import Run, RunState
from core.limits import Limits
from core.storage import read_json, write_json
from core.training.estimated import Estimate
from core.training.events import Emit

POLL_S = 0.5


def submit_estimate(
    plan: Mapping[str, Any],
    time_limit_s: float | None = None,
    *,
    owner: str = access.LOCAL_OWNER,
    limits: Limits | None = None,
) -> str:
    """Start timing ``plan`` in a job of ``owner``'s where its runs would train (admitted within
    ``limits`` as every job is: ``LimitExceeded``), stopped after ``time_limit_s`` (by default
    the kind's); the job's id, for ``estimate_result``."""
    return jobs.submit(plan, ESTIMATE, time_limit_s=time_limit_s, owner=owner, limits=limits)


def estimate_result(job_id: str, viewer: Viewer = access.LOCAL) -> Estimate | str | None:
    """None while the job is queued or timing; then its estimate, or in one line why there is none."""
    current = jobs.reconcile(job_id, viewer)
    if current.state.active:
        return None
    if current.state is not RunState.DONE:
        return current.message or f"the estimate job {current.state}"
    return Estimate.from_dict(read_json(Run.open(job_id, viewer).result_file))


def estimate(
    plan: Mapping[str, Any],
    timeout_s: float | None = None,
    *,
    owner: str = access.LOCAL_OWNER,
    limits: Limits | None = None,
) -> Estimate:
    """The plan's estimate, waited for: ``submit_estimate``, then the result within ``timeout_s``
    (by default the kind's time limit); raises ``RuntimeError`` with a one-line message when it
    cannot be had."""
    limit_s = timeout_s or ESTIMATE.time_limit_s or 0.0
    run_id = submit_estimate(plan, limit_s, owner=owner, limits=limits)
    deadline = time.monotonic() + limit_s + 60
    while (result := estimate_result(run_id)) is None:
        if time.monotonic() > deadline:
            jobs.cancel(run_id)
            raise RuntimeError("the estimate job did not finish in time (is the cluster busy?)")
        time.sleep(POLL_S)
    if isinstance(result, Estimate):
        return result
    raise RuntimeError(result)


def time_plan(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """The estimate job's target: time the run's plan here and write the estimate."""
    from core.training.estimate import time_plan_here
    from core.training.plan import Plan

    run = Run(Path(run_dir))
    result = time_plan_here(Plan.from_dict(run.plan_fields())).to_dict()
    write_json(run.result_file, result)
    return result
