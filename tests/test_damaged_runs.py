"""One damaged run never breaks the app: a run folder whose status, record, plan or metrics file
is truncated or of the wrong shape is listed as damaged, saying what is wrong, can be deleted from
Admin, and every page keeps working for everyone, the other runs included."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers_pages import APP, PASSWORD, TIMEOUT, sign_in
from streamlit.testing.v1 import AppTest

from core import access, inert, jobs, storage
from core.jobs.run import Run

# run id -> (the file damaged, what it holds instead, what the runs table says is wrong)
DAMAGES = {
    "cut-status": ("status.json", '{"state": "do', "status.json: not valid JSON"),
    "list-status": ("status.json", "[]", "status.json: a JSON list, not an object"),
    "cut-record": ("run.json", '{"owner": "lo', "run.json: not valid JSON"),
    "list-owner": ("run.json", '{"owner": ["local"]}', "run.json: owner is a list, expected str"),
    "odd-kind": (
        "status.json",
        '{"state": "done", "kind": "paint"}',
        "status.json: kind 'paint' is none of train",
    ),
    "odd-record-kind": (
        "run.json",
        '{"owner": "local", "kind": "paint"}',
        "run.json: kind 'paint' is none of",
    ),
    "cut-plan": ("plan.json", '{"backbone": "res', "plan.json: not valid JSON"),
    "cut-metrics": ("metrics.json", '{"best_val_', "metrics.json: not valid JSON"),
}
PAGES = ("pages/train.py", "pages/results.py", "pages/predict.py", "pages/admin.py")


@pytest.fixture
def damaged(finished_run: Path, lab_home: Path) -> str:
    """The finished faces run, sound, beside a copy of it damaged in each way; returns its id."""
    shutil.copytree(finished_run, storage.runs_dir() / finished_run.name)
    for run_id, (name, text, _) in DAMAGES.items():
        shutil.copytree(finished_run, storage.runs_dir() / run_id)
        (storage.runs_dir() / run_id / name).write_text(text)
    return finished_run.name


def test_damaged_runs_are_listed_as_such_and_every_page_works(damaged: str) -> None:
    rows = {row.run_id: row for row in jobs.list_runs()}
    assert rows[damaged].state == "done"
    for run_id, (_, _, problem) in DAMAGES.items():
        assert rows[run_id].state == "damaged" and problem in rows[run_id].message, run_id

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = damaged
    at.run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, f"{page}: {at.exception}"
    at.switch_page("pages/results.py").run()
    assert "Best val accuracy" in [m.label for m in at.metric]  # the sound run keeps working
    at.selectbox(key="results.detail").select("cut-metrics").run()
    assert not at.exception and "This run has no results (damaged)." in at.info[0].value
    at.switch_page("pages/predict.py").run()
    model = at.selectbox(key="predict.model")
    assert model.value == damaged and len(model.options) == 1  # only the sound run has a model to use

    at.switch_page("pages/admin.py").run()
    [finished] = [frame.value for frame in at.dataframe if "Kept" in frame.value.columns]
    listed = dict(zip(finished["Run"], finished["State"], strict=True))
    assert {run_id: listed[run_id] for run_id in DAMAGES} == dict.fromkeys(DAMAGES, "damaged")
    assert "run.json: owner is a list, expected str" in " ".join(finished["Damage"])
    at.selectbox(key="admin.run").select("list-owner").run()
    at.button(key="admin.delete").click().run()
    at.button(key="admin.delete_yes").click().run()
    assert not (storage.runs_dir() / "list-owner").exists()


def test_a_damaged_run_shows_its_card_saying_what_is_wrong(damaged: str) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = "cut-plan"
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    problem = inert.markdown("plan.json: not valid JSON")  # as the page writes it, escaped
    assert any("**damaged**" in md.value and problem in md.value for md in at.markdown)


def test_damaged_runs_of_unknown_owners_break_nobody_s_pages(
    damaged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(access.PASSWORD_HASH_ENV, access.hash_password(PASSWORD))
    at = sign_in("ann")
    for page in PAGES[:3]:
        at.switch_page(page).run()
        assert not at.exception, f"{page}: {at.exception}"
    with pytest.raises(jobs.RunNotFound):  # a record without a readable owner: admins alone see it
        Run.open("cut-record", access.Viewer(owner="local", sees_all=False))


def test_a_damaged_sweep_record_breaks_no_page(lab_home: Path) -> None:
    lab_home.mkdir(parents=True, exist_ok=True)  # it holds the shared backbone catalog already
    (lab_home / "retention.json").write_text('{"swept": 17')  # every page asks when it last swept
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
