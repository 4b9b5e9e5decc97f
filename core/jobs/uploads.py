"""Validating an uploaded zip: keep it, start its job, and follow it to a data set or a refusal.

An upload is untrusted and may be huge, so the web server never unpacks or decodes it (a 2 KB zip
can hold ten 49-megapixel images): it writes the zip under ``uploads/`` and submits this job,
which runs in a worker of its own (with progress, cancel and a time limit) and leaves either a
validated ``datasets/<sha256>/`` or nothing (ingestion stages its work and renames it into place
only once every check passed). Heavy imports wait until the job runs: the server imports this
package.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import access, jobs, storage
from core.access import LOCAL, Viewer
from core.jobs import usage
from core.jobs.admission import admitted
from core.jobs.kinds import VALIDATE
from core.jobs.run import Run
from core.limits import Limits
from core.storage import write_json
from core.training.events import Emit, phase_progress

VALIDATING = "validating"


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
        if Path(row.data or "").stem == digest:
            if row.state.active:
                return UploadState(digest, job_id=row.run_id)
            return UploadState(digest, job_id=row.run_id, refusal=row.message or f"validation {row.state}")
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
            upload,
            name=plan.get("name") or upload.name,
            limits=limits,
            progress=phase_progress(emit, VALIDATING),
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
