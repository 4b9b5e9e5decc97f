"""Jobs other than training that the workers run: validating an uploaded zip, analysing a data
set, classifying a zip of images with a finished run's model, timing a plan for its estimate.

An upload is untrusted and may be huge, so the web server never unpacks or decodes it (a 2 KB zip
can hold ten 49-megapixel images): it writes the zip under ``uploads/`` (a batch to classify: into
its job's folder) and submits this job, which runs in a worker of its own (with
progress, cancel and a time limit) and leaves either a validated ``datasets/<sha256>/`` or
nothing (ingestion stages its work and renames it into place only once every check passed).
The estimate times a plan on the kind of machine that would train it (this one, or a node of
the cluster), never on the web server, which would describe the web server and pay for a
training step. Heavy imports wait until the job runs: the server imports this package.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import access, jobs, storage
from core.access import LOCAL, Viewer
from core.jobs import usage
from core.jobs.admission import admitted
from core.jobs.kinds import ANALYSE, PREDICT, VALIDATE
from core.jobs.run import Run, RunState
from core.limits import Limits
from core.storage import write_json
from core.training.events import Emit, PhaseMeter

if TYPE_CHECKING:
    from core.artifacts.batch import Row

BATCH_ZIP = "images.zip"  # the zip to classify, in the job's folder until the job has read it
PREDICTIONS_CSV = "predictions.csv"


@dataclass(frozen=True)
class UploadState:
    """Where an upload stands: validated (its data set's folder), being validated (the job), or
    refused (why)."""

    sha256: str
    name: str = ""
    dataset: Path | None = None
    job_id: str | None = None
    refusal: str | None = None


def accept_upload(
    data: bytes, name: str, owner: str = access.LOCAL_OWNER, limits: Limits | None = None
) -> str:
    """Keep an uploaded zip under ``uploads/`` and start validating it, unless that content was
    validated before; return its sha256, by which the page follows it (and a reload finds it).

    Whoever uploads a data set becomes one of its owners, also when its content was there before.
    With ``limits``, a zip over the upload size or ``owner``'s disk quota is refused with
    ``LimitExceeded``, and the validation applies their ingestion ceilings. A write that fails (a
    full disk) raises, leaving nothing behind.
    """
    if limits is not None:
        limits.check_upload(len(data))
    digest = hashlib.sha256(data).hexdigest()
    if upload_state(digest).dataset is not None:
        access.add_owner(usage.dataset_owners_file(digest), owner)
        return digest
    # The zip is charged to its owner's quota as it is kept, under the admission lock: people
    # uploading at the same moment are charged one after the other.
    with admitted(owner, limits, kind=VALIDATE, adding=len(data)) if limits else nullcontext():
        _keep_and_validate(data, digest, name, owner, limits)
    return digest


def _keep_and_validate(data: bytes, digest: str, name: str, owner: str, limits: Limits | None) -> None:
    """Write the zip under ``uploads/`` and submit its validation job; a failure leaves no zip."""
    folder = storage.uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.zip"
    storage.write_bytes_atomic(path, data)  # whole or not at all: a full disk leaves no part
    ceilings = {"limits": asdict(limits)} if limits is not None else {}
    try:
        access.add_owner(usage.dataset_owners_file(digest), owner)
        jobs.submit({"data": str(path), "name": name, **ceilings}, VALIDATE, dataset_name=name, owner=owner)
    except BaseException:
        path.unlink(missing_ok=True)  # no job will unpack it
        raise


def upload_state(digest: str, viewer: Viewer = LOCAL) -> UploadState:
    """The upload with this sha256: its data set once validated, else its newest validation job;
    an upload that ``viewer`` does not own is no such upload."""
    if not _is_sha256(digest) or not _owns(viewer, digest):
        return UploadState(digest, refusal="no such upload")
    folder = storage.datasets_dir() / digest
    if (folder / "manifest.json").is_file():
        return UploadState(digest, dataset=folder)
    for row in jobs.list_runs(VALIDATE, viewer):  # newest first
        if Path(str(row.get("data") or "")).stem == digest:
            state = RunState(row["state"])
            if state.active:
                return UploadState(digest, job_id=row["run_id"])
            return UploadState(digest, job_id=row["run_id"], refusal=row["message"] or f"validation {state}")
    return UploadState(digest, refusal="no such upload: upload the zip again")


def _owns(viewer: Viewer, digest: str) -> bool:
    return any(viewer.may_see(owner) for owner in usage.dataset_owners(digest))


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def validate_upload(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Validate the zip the job's plan names (``data``, shown as ``name``), reporting each
    image checked; write ``result.json`` (the data set's folder and counts). The zip goes
    afterwards, whatever happened: its images are in the data set now, or refused."""
    from core.data import ingest

    run = Run(Path(run_dir))
    plan = run.plan_fields()
    upload = Path(plan["data"])
    try:
        limits = Limits(**plan.get("limits", {}))
        dataset = ingest(
            upload, name=plan.get("name") or upload.name, limits=limits, progress=_reporter(emit)
        )
    finally:
        upload.unlink(missing_ok=True)
    result = {
        "dataset": str(dataset.root),
        "sha256": dataset.report.source["sha256"],
        "images": dataset.report.num_images,
        "classes": len(dataset.classes),
    }
    write_json(run.result_file, result)
    return result


def _reporter(emit: Emit, phase: str = "validating") -> Callable[[int, int], None]:
    """Progress of a ``phase`` whose size the work learns once it has started (ingestion, once
    it has the layout; a batch prediction, once it has read the zip)."""
    meters: list[Callable[[int, int], None]] = []

    def progress(done: int, total: int) -> None:
        if not meters:
            meters.append(PhaseMeter(emit, phase, total).part())
        meters[0](done, total)

    return progress


def submit_analysis(
    data: str | Path,
    name: str,
    options: dict[str, Any] | None = None,
    owner: str = access.LOCAL_OWNER,
    limits: Limits | None = None,
) -> str:
    """Start analysing the data set at ``data`` (a validated upload's folder, a sample, a server
    folder) in a job of its own, beside any training; returns the job's id. With ``limits``, it
    is admitted as every job is (``LimitExceeded``)."""
    plan = {"data": str(data), "name": name, **(options or {})}
    return jobs.submit(plan, ANALYSE, dataset_name=name, owner=owner, limits=limits)


def analysis_result(job_id: str, viewer: Viewer = LOCAL) -> dict[str, Any] | None:
    """A finished analysis's result (``python -m core analyze --json``'s object), else None;
    ``RunNotFound`` for an id that names no job ``viewer`` may see."""
    return storage.read_json(Run.open(job_id, viewer).result_file)


def analyse_data(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Analyse the data set the job's plan names and write the result to ``result.json``."""
    from core.analysis import AnalysisPlan, analyse
    from core.data import ingest

    run = Run(Path(run_dir))
    fields = run.plan_fields()
    options = {key: fields[key] for key in ("sample", "seed", "budget_s") if key in fields}
    plan = AnalysisPlan(backbones=tuple(fields.get("backbones") or ()), **options)
    dataset = ingest(Path(fields["data"]), name=fields.get("name"), seed=plan.seed)
    result = analyse(dataset, plan, emit).to_dict()
    result["data"] = str(dataset.root)
    write_json(run.result_file, result)
    return result


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
            predictor, images, limits=Limits(**plan.get("limits", {})), progress=_reporter(emit, "predicting")
        )
    finally:
        images.unlink(missing_ok=True)
    storage.write_text_atomic(run.directory / PREDICTIONS_CSV, to_csv(rows))
    write_json(run.result_file, [row.to_dict() for row in rows])
    return {"images": len(rows)}
