"""A finished run scored on another labelled data set, in a job: the web server never does it.

Results offers the check on a zip the user uploads. The zip is validated by its own job first
(``core.jobs.uploads.accept_upload``); this job then runs the exported model over every image
of the validated data set (a few minutes for a VGG on thousands of images), reporting each
batch, and writes what ``core.training.evaluate.evaluate`` returns to ``result.json``. Torch is
imported only where the scoring happens: the web server imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core import jobs, storage
from core.access import LOCAL, Viewer
from core.jobs.kinds import EVALUATE
from core.jobs.run import Run
from core.limits import Limits
from core.training.events import Emit, phase_progress

SCORING = "scoring"  # the job's one phase, as its progress events name it


def submit_evaluation(
    model_run: str, dataset: Path, name: str, viewer: Viewer = LOCAL, limits: Limits | None = None
) -> str:
    """Start scoring the model of ``model_run`` (a run ``viewer`` may see: ``RunNotFound``
    otherwise) on the validated data set at ``dataset`` (shown as ``name``) in a job of
    ``viewer``'s, admitted as every job is; returns the job's id."""
    Run.open(model_run, viewer)
    plan = {"model_run": model_run, "data": str(dataset), "name": name}
    return jobs.submit(plan, EVALUATE, dataset_name=name, owner=viewer.owner, limits=limits)


def evaluation_result(job_id: str, viewer: Viewer = LOCAL) -> dict[str, Any] | None:
    """A finished evaluation's scores (accuracy, per class, confusion), else None;
    ``RunNotFound`` for an id that names no job ``viewer`` may see."""
    result = storage.read_json(Run.open(job_id, viewer).result_file)
    return result if isinstance(result, dict) else None


def score_run(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """The job's target: score the plan's model on the plan's data, reporting each batch."""
    from core.training.evaluate import evaluate

    run = Run(Path(run_dir))
    plan = run.plan_fields()
    model_dir = Run(storage.runs_dir() / plan["model_run"]).model_dir
    result = evaluate(model_dir, plan["data"], progress=phase_progress(emit, SCORING))
    storage.write_json(run.result_file, result)
    return {"images": result["images"], "accuracy": result["accuracy"]}
