"""Beyond one image: a zip or folder of images to a CSV, and a run scored on a second labelled zip."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from helpers_jobs import wait_for
from helpers_pages import APP, TIMEOUT
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import jobs
from core.artifacts.batch import predict_many, to_csv
from core.artifacts.predict import Predictor
from core.cli import main
from core.data import IngestError
from core.data.samples import sample_path
from core.jobs import Run, predictions, uploads
from core.jobs.evaluation import SCORING, evaluation_result, submit_evaluation
from core.training.events import read_events


@pytest.fixture
def trained(finished_run: Path, lab_home: Path) -> str:
    """The finished run, copied into this test's own storage."""
    shutil.copytree(finished_run, lab_home / "runs" / finished_run.name)
    return finished_run.name


def unlabelled_zip(tmp_path: Path) -> Path:
    """Four faces and two backgrounds, flat, plus a file that only claims to be an image."""
    faces = zipfile.ZipFile(sample_path("faces"))
    path = tmp_path / "new.zip"
    with zipfile.ZipFile(path, "w") as out:
        for name in ("face/000.png", "face/001.png", "face/002.png", "face/003.png"):
            out.writestr(f"batch/{Path(name).name}", faces.read(name))
        for name in [n for n in faces.namelist() if n.startswith("not_face/") and n.endswith(".png")][:2]:
            out.writestr(f"batch/bg-{Path(name).name}", faces.read(name))
        out.writestr("batch/broken.png", b"not a png")
        out.writestr("batch/notes.txt", b"ignored")
    return path


def test_a_zip_of_images_becomes_one_csv_line_each(finished_run: Path, tmp_path: Path) -> None:
    rows = predict_many(Predictor(finished_run / "model"), unlabelled_zip(tmp_path), top_k=2)
    assert [r.file for r in rows][:2] == ["batch/000.png", "batch/001.png"] and len(rows) == 7
    [broken] = [r for r in rows if r.error]
    assert broken.file == "batch/broken.png" and "cannot read image" in broken.error
    lines = list(csv.DictReader(io.StringIO(to_csv(rows, top_k=2))))
    assert list(lines[0]) == ["file", "predicted", "confidence", "class 2", "confidence 2", "error"]
    assert {line["predicted"] for line in lines if not line["error"]} <= {"face", "not_face"}


def test_the_cli_writes_the_csv_for_a_folder(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    zipfile.ZipFile(unlabelled_zip(tmp_path)).extractall(folder)
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(finished_run), str(folder), "--csv", str(out)]) == 0
    assert "7 images classified" in capsys.readouterr().out
    assert out.read_text().splitlines()[1].startswith("batch/000.png,")


def test_a_run_is_scored_on_a_second_labelled_zip(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(finished_run), str(sample_path("faces")), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 200 and sum(map(sum, result["confusion_matrix"])) == 200
    assert 0.5 < result["accuracy"] <= 1 and set(result["per_class"]) == {"face", "not_face"}


def test_labels_the_model_does_not_know_are_refused_in_one_line(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(finished_run), str(sample_path("textures"))]) == 1
    err = capsys.readouterr().err
    assert "the model does not know the classes 'brick', 'grass', 'gravel'" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- out of the web server


def flat_giants(count: int) -> bytes:
    """A zip of ``count`` 7000 x 7000 one-bit PNGs: 49 megapixels each in a few KB of archive."""
    giant = io.BytesIO()
    Image.new("1", (7000, 7000)).save(giant, "PNG")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(count):
            archive.writestr(f"giant-{n}.png", giant.getvalue())
    return out.getvalue()


def test_a_tiny_zip_of_huge_flat_images_is_refused_before_any_is_decoded(finished_run: Path) -> None:
    data = flat_giants(3)
    with pytest.raises(IngestError, match=r"^the images hold more than 1,000,000 pixels \('giant-0\.png'"):
        predict_many(Predictor(finished_run / "model"), data)


def settled(job_id: str) -> dict:
    return wait_for(lambda: (s := jobs.reconcile(job_id)).state.final and s, timeout_s=120)


def test_a_batch_is_classified_by_a_job_and_the_page_only_reads_its_results(
    trained: str, tmp_path: Path
) -> None:
    job_id = predictions.submit_predictions(trained, unlabelled_zip(tmp_path).read_bytes(), "new.zip")
    assert settled(job_id).state == "done"
    result = predictions.batch_result(job_id)
    assert len(result.rows) == 7 and result.csv.startswith("file,predicted,confidence")
    assert not (Run.open(job_id).directory / predictions.BATCH_ZIP).exists()  # the zip goes once read

    refused = predictions.submit_predictions(trained, flat_giants(10), "giants.zip")
    assert "pixels" in settled(refused).message

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["batch"] = job_id
    at.run()
    at.switch_page("pages/predict.py").run()
    assert not at.exception
    [table] = at.dataframe  # the only one: the job's rows
    assert len(table.value) == 7 and at.get("download_button")


def test_a_run_is_scored_on_a_labelled_zip_by_a_job_with_progress(trained: str) -> None:
    digest = uploads.accept_upload(sample_path("faces").read_bytes(), "faces.zip")
    validated = wait_for(lambda: uploads.upload_state(digest).dataset, timeout_s=120)
    job_id = submit_evaluation(trained, validated, "faces.zip")
    assert settled(job_id).state == "done"
    scores = evaluation_result(job_id)
    assert scores["images"] == 200 and sum(map(sum, scores["confusion_matrix"])) == 200
    progress = [e for e in read_events(Run.open(job_id).directory) if e.type == "progress"]
    assert progress[-1].phase == SCORING and progress[-1].done == progress[-1].total == 200

    unknown = uploads.accept_upload(sample_path("textures").read_bytes(), "textures.zip")
    other = wait_for(lambda: uploads.upload_state(unknown).dataset, timeout_s=120)
    refused = settled(submit_evaluation(trained, other, "textures.zip"))
    assert "does not know the classes 'brick'" in refused.message
    assert evaluation_result(refused.run_id) is None
