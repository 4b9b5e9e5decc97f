"""Uploads are validated by a job of their own, never by the web server: progress, cancel, a time
limit, and either a validated data set or nothing at all."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest
from fixtures.data.zips import classes, make_zip
from helpers_jobs import wait_for
from helpers_pages import APP, TIMEOUT
from PIL import Image, ImageFile
from streamlit.testing.v1 import AppTest

from core import jobs, storage
from core.jobs import kinds, uploads
from core.jobs.run import Run
from core.training.events import read_events

SMALL = make_zip(classes({"cats": 4, "dogs": 4}))


def settled(digest: str) -> uploads.UploadState:
    """The upload's state once every validation job of it has ended (reconciled, as the page
    does). A data set is there a moment before its job has written its result and ended, and
    the zip goes last: the state alone can be read while the job still runs."""

    def ended() -> uploads.UploadState | None:
        validations = [
            row.run_id for row in jobs.list_runs(kinds.VALIDATE) if Path(row.data or "").stem == digest
        ]
        if any(jobs.reconcile(job).state.active for job in validations):
            return None
        return uploads.upload_state(digest)

    return wait_for(ended, what=f"validation of upload {digest[:12]} ended")


def big_upload(images: int = 3000) -> bytes:
    return make_zip(classes({"a": images // 2, "b": images // 2}))


def test_an_upload_is_validated_by_a_job_and_becomes_a_data_set(lab_home: Path) -> None:
    digest = uploads.accept_upload(SMALL, "pets.zip")
    state = settled(digest)
    assert state.dataset == storage.datasets_dir() / digest and state.refusal is None
    [job] = jobs.list_runs(kinds.VALIDATE)
    assert job.state == "done" and jobs.list_runs() == []  # not a training run
    validating = [e for e in read_events(Run.open(job.run_id).directory) if e.type == "progress"]
    assert validating[-1].phase == "validating" and validating[-1].done == validating[-1].total == 8
    assert Run.open(job.run_id).record().dataset_name == "pets.zip"
    assert list(storage.uploads_dir().iterdir()) == []  # the zip went once unpacked
    assert uploads.accept_upload(SMALL, "again.zip") == digest  # known content: no second job
    assert len(jobs.list_runs(kinds.VALIDATE)) == 1


def test_a_refused_upload_says_why_and_leaves_nothing(lab_home: Path) -> None:
    digest = uploads.accept_upload(make_zip(classes({"only": 5})), "one.zip")
    state = settled(digest)
    assert state.dataset is None and "only one class ('only')" in state.refusal
    assert not (storage.datasets_dir() / digest).exists()


def test_a_validation_past_its_time_limit_fails_and_leaves_nothing(lab_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.zip"
    path.write_bytes(big_upload())
    job = jobs.submit({"data": str(path)}, kinds.VALIDATE, time_limit_s=0.5)
    final = wait_for(lambda: (s := jobs.reconcile(job)).state in ("done", "failed") and s)
    assert final.state == "failed" and final.message == "stopped after 0.5 s, the time limit for this job"
    assert not [p for p in storage.datasets_dir().glob("*") if not p.name.startswith(".")]


@pytest.mark.parametrize("how", ["cancel", "kill"])
def test_a_validation_stopped_half_way_leaves_no_data_set(lab_home: Path, how: str) -> None:
    digest = uploads.accept_upload(big_upload(), "big.zip")
    job = uploads.upload_state(digest).job_id
    wait_for(lambda: any(e.type == "progress" for e in read_events(Run.open(job).directory)))
    if how == "cancel":
        jobs.cancel(job)
    else:
        os.kill(jobs.status(job).pid, signal.SIGKILL)
    state = settled(digest)
    assert state.dataset is None and state.refusal
    assert not (storage.datasets_dir() / digest).exists()  # staging, if any, never became the data set


def test_a_made_up_upload_is_not_found(lab_home: Path) -> None:
    assert uploads.upload_state("x" * 64).refusal.startswith("no such upload")
    assert uploads.upload_state("../etc").refusal == "no such upload"


def test_the_validation_job_makes_small_previews_and_the_train_page_decodes_no_image(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pictures = {}
    for label, colour in {"red": (200, 20, 20), "blue": (20, 20, 200)}.items():
        for i in range(3):
            picture = io.BytesIO()
            Image.new("RGB", (400, 300), tuple(c + 10 * i for c in colour)).save(picture, "PNG")
            pictures[f"{label}/{i}.png"] = picture.getvalue()
    digest = uploads.accept_upload(make_zip(pictures), "colours.zip")
    assert settled(digest).dataset is not None

    previews = sorted((storage.datasets_dir() / digest / "previews").glob("*.jpg"))
    assert len(previews) == 6 and all(max(Image.open(p).size) <= 96 for p in previews)

    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("the web server decoded an image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", tripwire)  # decoding, in this process only
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["upload"] = digest
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    grid = [child.proto for child in at.expander[0].children.values() if child.type == "image"]
    assert sum(len(images.imgs) for images in grid) == 6  # three of each class, from the stored previews
