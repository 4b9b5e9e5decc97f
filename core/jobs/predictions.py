"""Classifying a zip of images with a finished run's model, in a job of its own.

The web server never unpacks the zip: it writes it into the job's folder and the worker reads it,
then deletes it. Heavy imports wait until the job runs: the server imports this package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import jobs, storage
from core.access import LOCAL, Viewer
from core.jobs.kinds import PREDICT
from core.jobs.run import Run
from core.limits import Limits
from core.storage import write_json
from core.training.events import Emit, phase_progress

if TYPE_CHECKING:
    from core.artifacts.batch import Row

BATCH_ZIP = "images.zip"  # the zip to classify, in the job's folder until the job has read it
PREDICTIONS_CSV = "predictions.csv"
PREDICTING = "predicting"


@dataclass(frozen=True)
class BatchResult:
    """A finished batch prediction: a row per image, and the CSV to download."""

    rows: list[Row]
    csv: str


def submit_predictions(
    model_run: str,
    data: bytes,
    name: str,
    viewer: Viewer = LOCAL,
    limits: Limits | None = None,
) -> str:
    """Start classifying every image of the zip ``data`` with the model of ``model_run`` (a
    finished run ``viewer`` may see: ``RunNotFound`` otherwise) in a job of ``viewer``'s, admitted
    as every job is (the zip is charged to their quota); returns the job's id."""
    Run.open(model_run, viewer)
    if limits is not None:
        limits.check_upload(len(data))
    ceilings = {"limits": asdict(limits)} if limits is not None else {}
    return jobs.submit(
        {"model_run": model_run, "name": name, **ceilings}, PREDICT, dataset_name=name, owner=viewer.owner,
        limits=limits, files={BATCH_ZIP: data},
    )  # fmt: skip


def batch_result(job_id: str, viewer: Viewer = LOCAL) -> BatchResult | None:
    """A finished batch prediction's rows and CSV, else None; ``RunNotFound`` for an id that
    names no job ``viewer`` may see."""
    from core.artifacts.batch import rows_from_dicts

    run = Run.open(job_id, viewer)
    rows = storage.read_json(run.result_file)
    if not isinstance(rows, list):
        return None
    return BatchResult(rows_from_dicts(rows), (run.directory / PREDICTIONS_CSV).read_text(encoding="utf-8"))


def predict_batch(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Classify the job's zip with its plan's model, reporting each batch; write the rows to
    ``result.json`` and the CSV beside it. The zip goes afterwards, whatever happened."""
    from core.artifacts.batch import predict_many, to_csv
    from core.artifacts.predict import Predictor

    run = Run(Path(run_dir))
    plan = run.plan_fields()
    images = run.directory / BATCH_ZIP
    try:
        predictor = Predictor(Run(storage.runs_dir() / plan["model_run"]).model_dir)
        rows = predict_many(
            predictor,
            images,
            limits=Limits(**plan.get("limits", {})),
            progress=phase_progress(emit, PREDICTING),
        )
    finally:
        images.unlink(missing_ok=True)
    storage.write_text_atomic(run.directory / PREDICTIONS_CSV, to_csv(rows))
    write_json(run.result_file, [row.to_dict() for row in rows])
    return {"images": len(rows)}
