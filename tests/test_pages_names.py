"""Runs are named by their data, case, backbone and accuracy; Predict opens on the run in view;
a run that did not work says so on its card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers_pages import open_page, take_the_advisors_plan

from core import inert
from core.jobs.run import Run


@pytest.fixture
def two_runs(finished_run: Path, lab_home: Path) -> tuple[str, str]:
    """The finished faces run twice: an older copy renamed as a browser upload, and the original."""
    newest = finished_run.name
    older = "20200101-000000-0000"
    shutil.copytree(finished_run, lab_home / "runs" / newest)
    shutil.copytree(finished_run, lab_home / "runs" / older)
    status = json.loads((lab_home / "runs" / older / "status.json").read_text())
    (lab_home / "runs" / older / "status.json").write_text(json.dumps({**status, "submitted": 1.0}))
    record = Run(lab_home / "runs" / older).record()
    Run(lab_home / "runs" / older).write_record(record.__class__(dataset_name="holiday photos.zip"))
    return older, newest


def test_runs_are_named_by_data_case_backbone_and_accuracy(two_runs: tuple[str, str]) -> None:
    older, _ = two_runs
    at = open_page("pages/results.py")
    table = at.dataframe[0].value
    assert set(table["data"]) == {"faces.zip", "holiday photos.zip"}
    detail = at.selectbox(key="results.detail")
    label = detail.format_func(older)
    assert label.startswith("holiday photos.zip · case 1 · efficientnet_lite0 · ") and "%" in label
    assert older not in label


def test_predict_opens_on_the_run_the_user_was_looking_at(two_runs: tuple[str, str]) -> None:
    older, _ = two_runs
    at = open_page("pages/results.py")
    at.selectbox(key="results.detail").set_value(older).run()
    at.button(key="results.try_model").click().run()
    assert at.title[0].value == "Predict"
    assert at.selectbox(key="predict.model").value == older
    assert "holiday photos" in at.info[0].value
    at.switch_page("pages/advisor.py").run()
    at.switch_page("pages/predict.py").run()  # the sidebar link: still the run in view
    assert at.selectbox(key="predict.model").value == older


def test_a_done_card_shows_the_final_accuracy_time_and_a_failure(
    two_runs: tuple[str, str], lab_home: Path
) -> None:
    _, newest = two_runs
    status_file = lab_home / "runs" / newest / "status.json"
    status = json.loads(status_file.read_text())
    status_file.write_text(json.dumps({**status, "started": 100.0, "finished": 142.0}))
    at = open_page("pages/train.py", run=newest)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Final accuracy"].endswith("%") and metrics["Total time"] == "42 s"
    # Shown as Markdown, escaped: a name from an upload may look like a link
    assert inert.markdown("faces.zip · case 1 · efficientnet_lite0") in at.subheader[0].value
    assert (
        inert.markdown("case 1 (feature extraction) · efficientnet_lite0 · 2 epochs") in at.caption[0].value
    )
    metrics_file = lab_home / "runs" / newest / "metrics.json"
    stored = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**stored, "best_val_accuracy": 0.5, "majority_rate": 0.5}))
    at = open_page("pages/train.py", run=newest)
    assert at.error[0].value.startswith("This run did not work") and "case 2" in at.error[0].value
    assert not at.success


def test_the_case_two_cut_is_chosen_among_stages_in_words_with_the_network_drawn() -> None:
    at = take_the_advisors_plan("different")  # faces, told different: case 2
    cut = at.selectbox(key="train.plan_cut_efficientnet_lite0")
    assert cut.value == "_blocks.10"
    assert cut.format_func("_blocks.10") == "stage 5 of 7 · 112 channels · 14×14 · keeps 21% of the network"
    charts = [c for c in at.get("plotly_chart") if c.proto.id and "cut_diagram" in c.proto.id]
    assert charts, "the kept/removed diagram of this network"
