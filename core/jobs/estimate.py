"""The epoch-time estimate, timed on the kind of machine that would train the run.

Timing two batches on the web server would describe the web server. On the local backend the
estimate runs in a fresh process of this machine (the one that trains), as before; under Ray it
is a short Ray job of its own (kind ``estimate``, kept out of the runs table) whose worker times
the plan on a node and writes the estimate to ``result.json``. Torch is imported only where the
timing happens: the web server imports this package.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import jobs
from core.jobs import backend
from core.jobs.run import Run, RunState
from core.storage import read_json, write_json
from core.training.events import Emit

if TYPE_CHECKING:
    from core.training.estimate import Estimate

ESTIMATE_KIND = "estimate"
ESTIMATE_TARGET = "core.jobs.estimate:time_plan"
POLL_S = 0.5


def estimate(plan: Mapping[str, Any], timeout_s: float = 600) -> Estimate:
    """The plan's estimate, timed out of this process where its runs would train; raises
    ``RuntimeError`` with a one-line message when it cannot be had."""
    if backend.configured().name != backend.RAY:
        from core.training.estimate import estimate_in_subprocess

        return estimate_in_subprocess(dict(plan), timeout_s)
    from core.training.estimate import Estimate

    run_id = jobs.submit(
        plan, target=ESTIMATE_TARGET, kind=ESTIMATE_KIND, queued=False, time_limit_s=timeout_s
    )
    final = _ended(run_id, deadline=time.monotonic() + timeout_s + 60)
    if final["state"] != RunState.DONE:
        raise RuntimeError(final["message"] or f"the estimate job {final['state']}")
    return Estimate.from_dict(read_json(Run.open(run_id).result_file))


def time_plan(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """The estimate job's target: time the run's plan here and write the estimate."""
    from core.training.estimate import estimate as time_here
    from core.training.plan import Plan

    run = Run(Path(run_dir))
    result = time_here(Plan.from_dict(run.plan_fields())).to_dict()
    write_json(run.result_file, result)
    return result


def _ended(run_id: str, deadline: float) -> dict[str, Any]:
    """The job's final status; a job still going at ``deadline`` is cancelled and says so."""
    while (current := jobs.reconcile(run_id))["state"] in (RunState.QUEUED, RunState.RUNNING):
        if time.monotonic() > deadline:
            jobs.cancel(run_id)
            raise RuntimeError("the estimate job did not finish in time (is the cluster busy?)")
        time.sleep(POLL_S)
    return current
