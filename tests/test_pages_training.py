"""Train, Results and Predict pages in every state a user meets, headless through AppTest."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from helpers_jobs import wait_until
from helpers_pages import after_validation, open_page, take_the_advisors_plan
from PIL import Image

from core import jobs
from core.data.samples import sample_path
from core.storage import runs_dir
from core.training.events import read_events


@pytest.fixture
def trained(finished_run: Path, lab_home: Path) -> str:
    """The finished run, copied into this test's own storage."""
    shutil.copytree(finished_run, lab_home / "runs" / finished_run.name)
    return finished_run.name


def test_train_page_shows_the_sample_report_and_a_prefilled_plan() -> None:
    at = open_page("pages/train.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "2" and metrics["Training images"] == "160"
    assert at.radio(key="train.plan_case").value == 1  # faces are small and similar: case 1
    assert at.selectbox(key="train.plan_backbone").value == "efficientnet_lite0"


def test_fine_tuning_says_each_epoch_s_image_size_until_progressive_resizing_is_off() -> None:
    at = open_page("pages/train.py")
    at.radio(key="train.plan_case").set_value(3).run()
    sizes = [c.value for c in at.caption if c.value.startswith("Image sizes:")]
    assert sizes and "at 224 px" in sizes[0] and "at 128 px" in sizes[0]
    at.selectbox(key="train.plan_progressive_resizing").set_value("off").run()
    assert not at.exception
    assert not [c.value for c in at.caption if c.value.startswith("Image sizes:")]


def test_plan_from_the_advisor_is_prefilled() -> None:
    at = take_the_advisors_plan("different")
    assert at.radio(key="train.plan_case").value == 2
    assert at.selectbox(key="train.plan_cut_efficientnet_lite0").value  # case 2 offers its stages


def test_a_refused_folder_is_a_message_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only = tmp_path / "data" / "one_class" / "cats"
    only.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(only / f"{i}.png")
    monkeypatch.setenv("TRANSFER_LAB_DATA_ROOT", str(tmp_path / "data"))
    at = open_page("pages/train.py")
    at.segmented_control(key="train.data_source").set_value("folder").run()
    after_validation(at.text_input(key="train.data_folder").input("one_class").run())
    assert not at.exception
    assert "cannot be used" in at.error[0].value and "class" in at.error[0].value


def test_a_folder_outside_the_data_root_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("TRANSFER_LAB_DATA_ROOT", str(tmp_path / "data"))
    at = open_page("pages/train.py")
    at.segmented_control(key="train.data_source").set_value("folder").run()
    at.text_input(key="train.data_folder").input("../../etc").run()
    assert "outside" in at.error[0].value


def test_a_queued_run_says_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    first = jobs.submit({"seconds": 30}, target="tests.helpers_jobs:forever")
    second = jobs.submit({"seconds": 1}, target="tests.helpers_jobs:sleepy")
    try:
        at = open_page("pages/train.py", run=second)
        assert any("place 1 in the queue · wait not known yet" in m.value for m in at.markdown)
    finally:
        jobs.cancel(second)
        jobs.cancel(first)


def test_a_failed_run_shows_its_reason() -> None:
    run = jobs.submit({}, target="tests.helpers_jobs:failing")
    wait_until(lambda: _final(run))
    at = open_page("pages/train.py", run=run)
    assert any("failed" in m.value for m in at.markdown)
    assert any("learning rate 'fast'" in e.value for e in at.error)


def test_a_done_run_links_to_results(trained: str) -> None:
    at = open_page("pages/train.py", run=trained)
    assert any("**done**" in m.value for m in at.markdown)
    assert "Training finished" in at.success[0].value
    assert any("local backend" in c.value for c in at.caption)  # the jobs backend, as a label


def test_results_empty_then_with_a_run(trained: str, lab_home: Path) -> None:
    at = open_page("pages/results.py")
    assert at.dataframe[0].value.shape[0] == 1
    assert at.metric[0].label == "Best val accuracy"
    assert at.get("plotly_chart")  # curves and the confusion matrix
    assert at.get("download_button")


def test_results_without_runs_points_to_train() -> None:
    at = open_page("pages/results.py")
    assert "No runs yet" in at.info[0].value


def test_predict_without_runs_and_with_one(trained: str) -> None:
    at = open_page("pages/predict.py")
    assert at.selectbox(key="predict.model").value == trained
    notice = at.info[0].value
    assert "trained on **faces\\.zip**" in notice and "knows 2 classes: face, not\\_face" in notice


def test_estimate_button_times_real_batches_in_a_job_the_page_follows() -> None:
    at = open_page("pages/train.py")
    at.number_input(key="train.plan_image_size_efficientnet_lite0").set_value(64).run()
    at.button(key="train.estimate").click().run()
    assert not at.exception
    [job_id] = at.session_state["train.estimates"].values()
    assert any(c.value == "Timing two batches..." for c in at.caption)  # the page is free meanwhile
    assert at.button(key="train.estimate_progress.cancel")
    deadline = time.monotonic() + 120
    while not jobs.reconcile(job_id).state.final:
        assert time.monotonic() < deadline, "the estimate job did not finish"
        time.sleep(0.3)
    at.run()
    assert (
        "to prepare" in at.info[0].value
        and "in all on cpu" in at.info[0].value
        and "to export" in at.info[0].value
    )
    said = at.info[0].value
    assert " 0 s " not in said and "each epoch refines the new layer in" in said  # case 1
    at.number_input(key="train.plan_epochs").set_value(9).run()  # another plan: its own estimate, later
    assert not any("in all on" in i.value for i in at.info)
    at.number_input(key="train.plan_epochs").set_value(10).run()
    assert at.info[0].value == said  # the estimate stays on screen for its plan
    shutil.rmtree(jobs.Run.open(job_id).directory)  # swept with old jobs
    at.run()
    assert not at.exception and not any("in all on" in i.value for i in at.info)
    assert at.button(key="train.estimate")  # a new estimate is a click away


def test_case_four_that_failed_offers_a_from_scratch_rerun(trained: str, lab_home: Path) -> None:
    metrics_file = lab_home / "runs" / trained / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    plan = {**metrics["plan"], "case": 4}
    failed = {**metrics, "best_val_accuracy": 0.5, "majority_rate": 0.5, "plan": plan}
    metrics_file.write_text(json.dumps(failed))
    at = open_page("pages/results.py")
    assert at.error[0].value.startswith("This run did not work: best validation accuracy 50.0%")
    assert "training from scratch (weights 'none')" in at.error[0].value
    at.button(key="results.rerun_scratch").click().run()
    rerun = next(r for r in jobs.list_runs() if r.run_id != trained)
    try:
        plan = json.loads((lab_home / "runs" / rerun.run_id / "plan.json").read_text())
        assert plan["weights"] == "none" and plan["backbone"] == "efficientnet_lite0"
        assert at.title[0].value == "Train"
    finally:
        jobs.cancel(rerun.run_id)


def test_a_running_run_shows_progress_and_cancels() -> None:
    run = jobs.submit({}, target="tests.helpers_jobs:forever")
    try:
        wait_until(lambda: any(e.type == "batch" for e in read_events(runs_dir() / run)))
        at = open_page("pages/train.py", run=run)
        assert any("**running**" in m.value for m in at.markdown)
        assert "Epoch 1" in at.get("progress")[0].proto.text
        at.button(key="train.cancel").click().run()
        wait_until(lambda: _final(run))
        assert jobs.status(run).state == "cancelled"
    finally:
        jobs.cancel(run)


def test_cancelling_a_run_that_has_trained_a_while_asks_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from pages import _live

    monkeypatch.setattr(_live, "CONFIRM_CANCEL_AFTER_S", 0.0)  # as if it had trained a minute
    run = jobs.submit({}, target="tests.helpers_jobs:forever")
    try:
        wait_until(lambda: any(e.type == "batch" for e in read_events(runs_dir() / run)))
        at = open_page("pages/train.py", run=run)
        at.button(key="train.cancel").click().run()
        assert jobs.status(run).state == "running"
        assert "Cancel this run? It has trained for" in at.warning[0].value
        at.button(key="train.confirm_cancel_no").click().run()
        assert jobs.status(run).state == "running" and not at.warning
        at.button(key="train.cancel").click().run()
        at.button(key="train.confirm_cancel_yes").click().run()
        wait_until(lambda: _final(run))
        assert jobs.status(run).state == "cancelled"
    finally:
        jobs.cancel(run)


def test_a_frozen_case_shows_its_feature_pass_before_any_epoch() -> None:
    run = jobs.submit({"epochs": 10}, target="tests.helpers_jobs:embedding")
    try:
        wait_until(lambda: any(e.type == "progress" for e in read_events(runs_dir() / run)))
        at = open_page("pages/train.py", run=run)
        [bar] = at.get("progress")
        assert "Computing features: 50 of 200 images · 25 images/s" in bar.proto.text
        left = int(re.search(r"· (\d+) s left", bar.proto.text).group(1))
        assert 0 <= left <= 6  # 150 images at 25 a second, less the time since the event
    finally:
        jobs.cancel(run)


def _final(run: str) -> bool:
    return jobs.status(run).state in ("done", "failed", "cancelled")


def test_the_plan_survives_a_visit_to_another_page() -> None:
    at = open_page("pages/train.py")
    at.number_input(key="train.plan_epochs").set_value(7).run()
    at.switch_page("pages/advisor.py").run()
    at.switch_page("pages/train.py").run()
    assert at.number_input(key="train.plan_epochs").value == 7


def test_use_this_plan_overrides_a_case_chosen_earlier() -> None:
    at = open_page("pages/train.py")
    assert at.radio(key="train.plan_case").value == 1
    at.switch_page("pages/advisor.py").run()
    at.radio(key="advisor.similarity").set_value("different").run()
    at.button(key="advisor.use_plan").click().run()
    assert at.radio(key="train.plan_case").value == 2


def test_the_report_shows_the_split_that_will_train() -> None:
    at = open_page("pages/train.py")
    at.slider(key="train.plan_val").set_value(0.5).run()
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Training images"], metrics["Validation images"]) == ("100", "100")


def test_names_inside_an_upload_are_shown_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for label in ("[click](http://evil)", "plain"):
        folder = tmp_path / "data" / "set" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.png")
    monkeypatch.setenv("TRANSFER_LAB_DATA_ROOT", str(tmp_path / "data"))
    at = open_page("pages/train.py")
    at.segmented_control(key="train.data_source").set_value("folder").run()
    after_validation(at.text_input(key="train.data_folder").input("set").run())
    labels = [m.value for m in at.markdown if "click" in m.value]
    assert labels and all(r"\[click\]\(http\:" in value for value in labels)


def test_a_sample_first_ingested_under_its_file_name_still_gets_its_advice() -> None:
    from core.data import ingest

    ingest(sample_path("faces"))  # as a worker or the CLI would: the report names "faces.zip"
    at = open_page("pages/train.py")
    assert at.radio(key="train.plan_case").value == 1  # faces resemble ImageNet and are few: case 1


def test_another_data_set_brings_its_own_advice() -> None:
    at = open_page("pages/train.py")
    assert at.radio(key="train.plan_case").value == 1  # faces: small, similar to ImageNet
    at.selectbox(key="train.data_sample").set_value("digits").run()
    assert at.radio(key="train.plan_case").value == 2  # digits: small, different from ImageNet


@pytest.mark.parametrize(
    "run_id", ["x" * 300, "[click](http://evil.example)", "../../etc", "20261129-120000-dead"]
)
def test_a_crafted_run_link_shows_no_run_and_nothing_else(run_id: str, lab_home: Path) -> None:
    at = open_page("pages/train.py", run=run_id)  # no exception: open_page asserts it
    [error] = at.error
    assert error.value.startswith("No run ") and "may have been deleted" in error.value
    assert "](http" not in error.value  # a link in the id stays text
    assert str(lab_home) not in error.value and len(error.value) < 200


def test_an_upload_link_finds_its_validated_data_after_a_reload(lab_home: Path) -> None:
    from fixtures.data.zips import classes, make_zip

    from core.jobs import uploads

    digest = uploads.accept_upload(make_zip(classes({"cats": 5, "dogs": 5})), "pets.zip")
    wait_until(lambda: uploads.upload_state(digest).dataset is not None)
    at = open_page("pages/train.py", upload=digest)  # a new session: the uploader is empty
    assert at.segmented_control(key="train.data_source").value == "upload"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "2" and "Using your earlier upload" in at.caption[0].value


@pytest.mark.parametrize("digest", ["0" * 64, "not-a-hash"])
def test_an_upload_link_to_nothing_says_so(digest: str) -> None:
    at = open_page("pages/train.py", upload=digest)
    assert "no such upload" in at.error[0].value
