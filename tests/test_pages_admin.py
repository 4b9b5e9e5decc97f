"""The Admin page through the app shell (AppTest): only admins have it; it shows the disk per
owner, the queue and its workers, and pins, deletes and cancels. And the run card's line that
announces when retention deletes a run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers_jobs import FOREVER, wait_for_state, wait_until
from helpers_pages import APP, sign_in
from helpers_stored import sha, stored_dataset, stored_run
from streamlit.testing.v1 import AppTest

from core import access, jobs, storage
from core.housekeeping import retention
from core.jobs import Run, queue
from core.jobs.kinds import KINDS

# Real workers in some tests: one run at a time, and none left behind.
pytestmark = pytest.mark.usefixtures("home")


@pytest.fixture
def team(monkeypatch: pytest.MonkeyPatch, lab_home: Path) -> Path:
    """A shared instance (sign-in on, so finished runs are kept 30 days) whose admin is boss."""
    monkeypatch.setenv(access.ADMINS_ENV, "boss@example.com")
    return lab_home


def table(at: AppTest, column: str) -> list[dict[str, object]]:
    """The rows of the one table that has ``column``."""
    [frame] = [frame.value for frame in at.dataframe if column in frame.value.columns]
    return frame.to_dict("records")


def test_a_non_admin_has_no_admin_page_not_even_by_its_address(team: Path) -> None:
    at = sign_in("ann")
    # The page is not registered for ann: her /admin is an unknown page, like any made-up address.
    with pytest.raises(ValueError, match="Could not find a navigation page") as refused:
        at.switch_page("pages/admin.py")
    assert "admin.py" not in re.sub(r"for '[^']*'", "", str(refused.value))
    assert not at.exception and at.title[0].value == "Which transfer-learning approach?"


def test_with_access_off_the_local_viewer_runs_the_instance() -> None:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/admin.py").run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["Disk", "Queue and workers", "Finished runs", "Act on a run"]
    assert not at.dataframe  # nothing stored yet, no run at all
    assert "Nothing stored yet." in [c.value for c in at.caption]


def test_a_stored_run_of_each_kind_lists_with_its_kinds_label() -> None:
    for kind in KINDS:
        stored_run(f"old-{kind.name}", finished_days_ago=1, kind=kind)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/admin.py").run()
    assert not at.exception, at.exception
    listed = {row["Run"]: row["Kind"] for row in table(at, "Kept")}
    assert listed == {f"old-{kind.name}": kind.label for kind in KINDS}
    assert listed["old-validate"] == "validation" and listed["old-train"] == "training"


def test_an_admin_sees_disk_queue_and_workers_and_pins_deletes_and_cancels(team: Path) -> None:
    stored_run(
        "alice-old", finished_days_ago=10, owner="alice", data=str(stored_dataset(sha("a"), {"alice": 1}))
    )
    stored_run("bob-done", finished_days_ago=1, owner="bob")
    running = jobs.submit({}, target=FOREVER, queued=False, owner="carol")
    wait_until(lambda: jobs.status(running).heartbeat, "a running worker")

    at = sign_in("boss")
    at.switch_page("pages/admin.py").run()
    assert not at.exception, at.exception

    disk = {row["Owner"]: row for row in table(at, "In data sets")}
    assert set(disk) == {"alice", "bob", "carol"}
    assert disk["alice"]["Data sets"] == 1 and disk["alice"]["In data sets"].endswith("KiB")
    assert at.get("plotly_chart") and {m.label for m in at.metric} >= {"Free on its disk", "Disk size"}
    [active] = table(at, "Heartbeat")
    pid = jobs.status(running).pid
    assert (active["Run"], active["Owner"], active["State"]) == (running, "carol", "running")
    assert active["Worker"].startswith(f"pid {pid} on ") and active["Heartbeat"].endswith("s ago")
    finished = {row["Run"]: row for row in table(at, "Kept")}
    assert finished["alice-old"]["Kept"].startswith("Kept until ")

    at.selectbox(key="admin.run").select("alice-old").run()
    at.button(key="admin.pin").click().run()
    assert retention.is_pinned(Run.open("alice-old"))
    assert {row["Run"]: row["Kept"] for row in table(at, "Kept")}["alice-old"].startswith("Pinned")
    at.button(key="admin.unpin").click().run()
    assert not retention.is_pinned(Run.open("alice-old"))

    at.selectbox(key="admin.run").select("bob-done").run()
    at.button(key="admin.delete").click().run()
    assert (storage.runs_dir() / "bob-done").exists()  # it asks first
    at.button(key="admin.delete_yes").click().run()
    assert not (storage.runs_dir() / "bob-done").exists()
    assert at.success[0].value.startswith("Deleted bob-done")
    assert "bob-done" not in at.selectbox(key="admin.run").options

    at.selectbox(key="admin.run").select(running).run()
    assert {"admin.delete", "admin.pin"}.isdisjoint(button.key for button in at.button)  # cancel only
    at.button(key="admin.cancel").click().run()
    wait_for_state(running, "cancelled")
    wait_until(lambda: not queue.worker_alive(storage.runs_dir() / running), "the worker's exit")


def test_a_finished_runs_card_says_until_when_it_is_kept(team: Path) -> None:
    stored_run("mine", finished_days_ago=10, owner="ann@example.com")
    at = sign_in("ann", run="mine")
    at.switch_page("pages/train.py").run()
    line = "finished runs are deleted after 30 days. An admin can pin it."
    assert any(c.value.endswith(line) and "Kept until" in c.value for c in at.caption)
    retention.pin(Run.open("mine"))
    at.switch_page("pages/results.py").run()
    assert ":material/auto_delete: Pinned: kept until unpinned." in [c.value for c in at.caption]


def test_without_a_keeping_time_the_card_says_nothing_of_deletion() -> None:
    stored_run("mine", finished_days_ago=1000, owner="local")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = "mine"
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    assert not any("deleted" in c.value or "Kept until" in c.value for c in at.caption)


def test_the_app_sweeps_by_itself_beside_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFER_LAB_KEEP_RUNS_DAYS", "30")
    old, recent = stored_run("old", finished_days_ago=40), stored_run("recent", finished_days_ago=3)

    at = AppTest.from_file(APP, default_timeout=120).run()

    assert not at.exception
    wait_until(lambda: not old.directory.exists(), "the sweep")  # in a thread of its own
    assert recent.directory.exists() and not retention.is_due()
