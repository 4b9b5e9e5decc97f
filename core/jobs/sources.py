"""Validating a shipped sample or a folder on the server, in a job: the web server never decodes.

Uploads are validated by ``core.jobs.uploads``. A sample or a server folder needs the same
work the first time it is picked (a folder may hold a hundred thousand photos), so it goes to a
job of the same shape, with progress and cancel; the pages then read the validated data set's
stored manifest (``core.data.stored_dataset``), which costs no decoding. Heavy imports wait
until the job runs: the server imports this module.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from core import access, jobs
from core.access import LOCAL, Viewer
from core.jobs.kinds import VALIDATE_SOURCE
from core.jobs.run import Run, RunState
from core.limits import Limits
from core.storage import write_json
from core.training.events import Emit, phase_progress

VALIDATING = "validating"  # the job's one phase, as its progress events name it


def submit_validation(
    source: Path, name: str, owner: str = access.LOCAL_OWNER, limits: Limits | None = None
) -> str:
    """Start validating the sample zip or server folder ``source`` (shown as ``name``) in a job
    of ``owner``'s, admitted as every job is (``LimitExceeded``); returns the job's id."""
    ceilings = {"limits": asdict(limits)} if limits is not None else {}
    plan = {"data": str(source), "name": name, **ceilings}
    return jobs.submit(plan, VALIDATE_SOURCE, dataset_name=name, owner=owner, limits=limits)


def refusal(job_id: str, viewer: Viewer = LOCAL) -> str | None:
    """Why the validation job refused its data (or ended without validating it), else ``None``
    while it runs or once it has passed."""
    status = jobs.status(job_id, viewer)
    if status.state.active or status.state is RunState.DONE:
        return None
    return status.message or f"validation {status.state}"


def validate_source(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """The job's target: ingest the plan's source, reporting each image checked."""
    from core.data import ingest

    run = Run(Path(run_dir))
    plan = run.plan_fields()
    dataset = ingest(
        Path(plan["data"]),
        name=plan.get("name"),
        limits=Limits(**plan.get("limits", {})),
        progress=phase_progress(emit, VALIDATING),
    )
    result = {"images": dataset.report.num_images, "classes": len(dataset.classes)}
    write_json(run.result_file, result)
    return result
