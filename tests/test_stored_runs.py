"""A run directory written by an earlier version of the app still lists, opens, shows its
progress and predicts: stored runs outlive upgrades.

``tests/fixtures/runs/20261129-120000-f1x7`` was written by the worker of the first release: a
tiny case-4 squeezenet1_1 run on the faces sample whose pre-trained init did not beat the
majority class, so its events carry a from-scratch suggestion. It is committed as written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers_pages import open_page

from core import jobs
from core.artifacts.predict import Predictor
from core.data.samples import sample_path
from core.training.events import read_events

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "runs" / "20261129-120000-f1x7"
RUN_ID = FIXTURE.name


@pytest.fixture
def stored(lab_home: Path) -> str:
    shutil.copytree(FIXTURE, lab_home / "runs" / RUN_ID)
    return RUN_ID


def test_an_old_run_lists_as_done_with_its_summary(stored: str) -> None:
    [row] = jobs.list_runs()
    assert (row.run_id, row.state, row.backbone, row.case) == (stored, "done", "squeezenet1_1", 4)
    assert row.best_val_accuracy == 0.5
    assert jobs.status(stored).state == "done"


def test_an_old_runs_events_read_back_with_the_suggestion(stored: str, lab_home: Path) -> None:
    events = read_events(lab_home / "runs" / stored)
    epochs = [e for e in events if e.type == "epoch"]
    assert [e.epoch for e in epochs] == [1, 2]
    [warning] = [e for e in events if e.type == "warning"]
    assert warning.suggest == "from_scratch"


def test_an_old_run_shows_its_progress_and_result(stored: str) -> None:
    at = open_page("pages/train.py", run=stored)
    assert any("**done**" in m.value for m in at.markdown)
    assert any("train from scratch" in w.value for w in at.warning)
    assert at.get("plotly_chart")  # the curves of its two epochs


def test_an_old_run_opens_on_results(stored: str) -> None:
    at = open_page("pages/results.py", run=stored)
    assert at.metric[0].value == "50.0%"
    assert at.error[0].value.startswith("This run did not work")  # judged by today's rule
    assert "training from scratch (weights 'none')" in at.error[0].value and at.button(
        key="results.rerun_scratch"
    )
    assert at.get("download_button")


def test_an_old_run_predicts(stored: str, lab_home: Path) -> None:
    predictor = Predictor(lab_home / "runs" / stored / "model")
    [prediction] = predictor.predict([_a_face()], top_k=2)
    assert {label for label, _ in prediction.top} == {"face", "not_face"}
    at = open_page("pages/predict.py", run=stored)
    assert at.selectbox(key="predict.model").value == stored


def _a_face() -> bytes:
    import zipfile

    with zipfile.ZipFile(sample_path("faces")) as archive:
        name = next(n for n in archive.namelist() if "face" in n and n.endswith(".png"))
        return archive.read(name)
