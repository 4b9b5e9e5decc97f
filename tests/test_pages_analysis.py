"""The Advisor's "Measure my data" part in each state a user meets, headless through AppTest."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.analysis.record import read_analysis
from core.data.samples import sample_path
from core.experiments import race as races
from core.experiments.race import Lane, LaneResult
from core.housekeeping import retention
from core.jobs import analysis
from core.jobs.run import RunState
from core.jobs.table import RunRow
from core.storage import write_json

APP = str(Path(__file__).resolve().parents[1] / "app_shell.py")
TIMEOUT = 180
FACES_ANALYSIS = Path(__file__).parent / "fixtures" / "analysis" / "faces.json"  # analyze faces --sample 24


def open_advisor(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def wait_final(job_id: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not jobs.reconcile(job_id).state.final:
        assert time.monotonic() < deadline, f"analysis {job_id} did not finish"
        time.sleep(0.3)


def test_measuring_starts_a_job_shows_its_progress_then_the_numbers_and_carries_the_plan_to_train(
    lab_home: Path,
) -> None:
    at = open_advisor()
    at.segmented_control(key="advisor.mode").set_value("measure").run()
    at.slider(key="advisor.analysis_sample").set_value(20)
    at.multiselect(key="advisor.analysis_backbones").set_value(["efficientnet_lite0"])
    next(b for b in at.button if b.label == "Analyse my data").click().run()

    job_id = (
        at.query_params["analysis"][0]
        if isinstance(at.query_params["analysis"], list)
        else at.query_params["analysis"]
    )
    assert jobs.status(job_id).state.active
    assert at.get("button") and any(b.label == "Cancel" for b in at.button)  # the progress card, with cancel

    wait_final(job_id)
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    result = analysis.analysis_result(job_id)
    case = result.advice.case
    # The faces sample: 25 x 25 grey crops, a shift of the look that the page names in words.
    assert metrics["Shift from ImageNet"] == "the look"
    assert metrics["Plan"] == f"case {case}" and metrics["Backbone"] == "efficientnet_lite0"
    plan = next(m.value for m in at.markdown if m.value.startswith("**Plan.**"))
    assert f"Case {case} " in plan and "the new layer scores" in plan
    # The matrix, the frozen options with the new layer's accuracy, the learning curve, the shift, the ranking.
    assert len(at.get("plotly_chart")) == 5

    at.button(key="advisor.use_measured_plan").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="train.plan_case").value == case
    reason = next(m.value for m in at.markdown if "because" in m.value)
    assert f"Case {case} " in reason and f"200 images measure as {result.size.size}" in reason
    assert "your images measure as" in reason and "the new layer scores" in reason
    cuts = [box.value for box in at.selectbox if box.key == "train.plan_cut_efficientnet_lite0"]
    assert cuts == ([result.cut] if case == 2 else [])  # the measured cut, where the plan cuts
    assert at.selectbox(key="train.plan_backbone").value == "efficientnet_lite0"


def test_an_analysis_that_failed_says_why_in_one_line(lab_home: Path) -> None:
    job_id = analysis.submit_analysis(sample_path("faces"), "faces", {"backbones": ["resnet152"]})
    wait_final(job_id)

    at = open_advisor(analysis=job_id)

    assert at.segmented_control(key="advisor.mode").value == "measure"
    [error] = at.error
    assert error.value.startswith("The analysis did not finish:") and "resnet152" in error.value
    assert "Traceback" not in error.value


def test_an_analysis_whose_result_is_damaged_says_so_and_offers_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = tmp_path / "result.json"
    stored.write_text('{"dataset": {"name": "faces"')  # cut short
    monkeypatch.setattr(
        jobs, "status", lambda job_id, viewer=None: RunRow(state=RunState.DONE, run_id=job_id)
    )
    monkeypatch.setattr(analysis, "analysis_result", lambda job_id, viewer=None: read_analysis(stored))

    at = open_advisor(analysis="20990101-000000-0000")

    [error] = at.error
    shown = error.value.replace("\\", "")  # as drawn, Markdown escapes undone
    assert shown.startswith("The analysis's result cannot be read: result.json: not valid JSON")
    assert at.button(key="advisor.new_analysis")


def test_an_analysis_stored_before_the_shift_and_the_options_were_measured_still_shows_its_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = json.loads(FACES_ANALYSIS.read_text())
    for newer in ("shift_type", "stage_scores", "learning_curve", "size"):
        del stored[newer]
    (tmp_path / "result.json").write_text(json.dumps(stored))
    monkeypatch.setattr(
        jobs, "status", lambda job_id, viewer=None: RunRow(state=RunState.DONE, run_id=job_id)
    )
    monkeypatch.setattr(
        analysis, "analysis_result", lambda job_id, viewer=None: read_analysis(tmp_path / "result.json")
    )

    at = open_advisor(analysis="20990101-000000-0000")

    assert at.subheader[0].value.endswith(f"case {stored['recommended_case']}, {stored['advice']['name']}")
    assert not any(text.value.startswith("**Shift.**") for text in at.markdown)


@pytest.mark.parametrize("made_up", ["20990101-000000-0000", "../../etc"])
def test_an_analysis_link_to_nothing_says_so(made_up: str) -> None:
    at = open_advisor(analysis=made_up)

    [warning] = at.warning
    assert warning.value.startswith("No such analysis")


def test_the_advisor_shows_the_race_its_contenders_and_how_the_advice_fared(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The faces sample's analysis as the job left it (advice: case 1; a shift of the look), with a
    race whose case 3 finished behind and whose surgical fine-tune halving dropped."""
    result = replace(read_analysis(FACES_ANALYSIS), data=str(sample_path("faces")))
    monkeypatch.setattr(
        jobs, "status", lambda job_id, viewer=None: RunRow(state=RunState.DONE, run_id=job_id)
    )
    monkeypatch.setattr(analysis, "analysis_result", lambda job_id, viewer=None: result)
    contenders, advised = races.contenders(result)
    lanes = tuple(Lane(key, seed, f"run-{key}-{seed}") for key in ("case3", "surgical") for seed in (0, 1))
    race = races.Race("r1", result.data, advised, contenders, lanes)
    write_json(race.file, asdict(race))
    ended = tuple(
        LaneResult(lane, RunState.DONE, 0.6, 80.0, (0.6,)) if lane.contender == "case3" else
        LaneResult(lane, RunState.CANCELLED, None, 40.0, (0.5,))
        for lane in lanes
    )  # fmt: skip
    monkeypatch.setattr(races, "advance", lambda race, viewer=None: races.judged(race, ended))
    monkeypatch.setattr(retention, "is_due", lambda every_s: False)  # its runs are made up: no sweep

    at = open_advisor(analysis="20990101-000000-0000", race="r1")

    verdict = next(m.value for m in at.markdown if m.value.startswith("**Race:**")).replace("\\", "")
    # Both frozen options score 100% on faces: a tie, and the fine-tunes behind lost.
    assert (
        verdict
        == "**Race:** the advised plan (case 1, the whole body) tied with case 2, cut after _blocks.10: the gap is within the spread"
    )
    [bars] = json.loads(at.get("plotly_chart")[-1].proto.spec)["data"]
    assert bars["x"] == [c.label for c in contenders]
    assert bars["text"][2:] == ["60.0% · 80 s · lost", "50.0% · 40 s · dropped after epoch 1"]
