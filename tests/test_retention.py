"""Retention removes exactly the right runs and data sets: finished runs past their keeping time
go, active, pinned and worker-held ones stay; a data set goes only when no owner references it
and no kept run uses it; the sweep's schedule and its command line."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers_jobs import FOREVER, SLEEPY, wait_for_state, wait_until
from helpers_stored import KEEP, NOW, sha, stored_dataset, stored_run

from core import access, jobs, storage
from core.cli import main as cli_main
from core.housekeeping import retention
from core.jobs import queue, usage
from core.jobs.kinds import ANALYSE, VALIDATE
from core.jobs.run import Run, RunState, StatusKeeper
from core.limits import DAY_S, Limits
from core.storage import write_json


def test_only_finished_runs_past_their_time_go() -> None:
    old = stored_run("old", finished_days_ago=40)
    stored_run("recent", finished_days_ago=10)
    stored_run("queued", finished_days_ago=None)
    pinned = stored_run("pinned", finished_days_ago=400)
    retention.pin(pinned)
    stored_run("old-validation", finished_days_ago=31, kind=VALIDATE, data="/x/uploads/a.zip")
    stored_run("old-analysis", finished_days_ago=31, kind=ANALYSE)
    held = stored_run("held", finished_days_ago=40)

    with StatusKeeper.take(held):  # its worker still holds it, whatever its status says
        swept = retention.sweep(KEEP, now=NOW)

    assert sorted(swept.run_ids) == ["old", "old-analysis", "old-validation"]
    assert swept.runs[0].size > 2048
    assert sorted(p.name for p in storage.runs_dir().iterdir()) == ["held", "pinned", "queued", "recent"]
    assert not old.directory.exists()
    with pytest.raises(jobs.RunNotFound):
        jobs.status("old")


def test_without_a_limit_nothing_goes_and_nothing_expires() -> None:
    run = stored_run("ancient", finished_days_ago=4000)
    stored_dataset(sha("a"), {"alice": 4000})
    assert retention.expires_at(run, Limits()) is None
    assert not retention.sweep(Limits(), now=NOW).runs and not retention.sweep(Limits(), now=NOW).datasets
    assert run.directory.exists() and (storage.datasets_dir() / sha("a")).exists()


def test_expiry_is_the_finish_plus_the_keeping_time_and_none_when_pinned() -> None:
    run = stored_run("r", finished_days_ago=10)
    assert retention.expires_at(run, KEEP) == pytest.approx(NOW + 20 * DAY_S)
    retention.pin(run)
    assert retention.is_pinned(run) and retention.expires_at(run, KEEP) is None
    retention.unpin(run)
    assert retention.expires_at(run, KEEP) == pytest.approx(NOW + 20 * DAY_S)
    assert retention.expires_at(stored_run("q", finished_days_ago=None), KEEP) is None


def test_a_data_set_goes_only_when_no_owner_references_it_and_no_kept_run_uses_it() -> None:
    lapsed = stored_dataset(sha("a"), {"alice": 40, "bob": 35})
    shared = stored_dataset(sha("b"), {"alice": 40, "bob": 5})  # bob uploaded it again lately
    used = stored_dataset(sha("c"), {"alice": 60})
    used_by_expired = stored_dataset(sha("d"), {"alice": 60})
    old_style = stored_dataset(sha("e"), ["carol"])  # a list: counted from the file's last change
    os.utime(usage.dataset_owners_file(sha("e")), (NOW - 45 * DAY_S, NOW - 45 * DAY_S))
    no_owners = stored_dataset(sha("f"), None)  # from before owners: local, since it was made
    os.utime(no_owners / "manifest.json", (NOW - 45 * DAY_S, NOW - 45 * DAY_S))
    stored_run("uses-c", finished_days_ago=5, data=str(used / "images"))
    stored_run("uses-d", finished_days_ago=40, data=str(used_by_expired))

    swept = retention.sweep(KEEP, now=NOW)

    assert swept.run_ids == ["uses-d"]
    assert sorted(swept.digests) == [sha("a"), sha("d"), sha("e"), sha("f")]
    for gone in (lapsed, used_by_expired, old_style, no_owners):
        assert not gone.exists() and not usage.dataset_owners_file(gone.name).exists()
    assert shared.exists() and usage.dataset_owners(sha("b")) == ["alice", "bob"]
    assert used.exists()
    assert sorted(digest for digest, _ in usage.datasets()) == [sha("b"), sha("c")]


def test_a_kept_run_keeps_the_data_set_it_recorded_and_an_unknown_active_one_keeps_them_all() -> None:
    sample = stored_dataset(sha("g"), None)  # a zip outside datasets/, extracted here long ago
    os.utime(sample / "manifest.json", (NOW - 90 * DAY_S, NOW - 90 * DAY_S))
    lapsed = stored_dataset(sha("h"), {"alice": 90})
    on_sample = stored_run("on-sample", finished_days_ago=5, data="/app/samples/faces.zip")
    record = on_sample.record()
    on_sample.write_record(replace(record, provenance={"dataset_sha256": sha("g")}))
    starting = stored_run("starting", finished_days_ago=None, data="/data/new.zip")  # not ingested yet

    assert retention.sweep(KEEP, now=NOW).digests == []
    assert sample.exists() and lapsed.exists()
    with StatusKeeper.take(starting) as keeper:  # it ends before it read any data set
        keeper.set_state(RunState.FAILED, "refused")
    assert retention.sweep(KEEP, now=NOW).digests == [sha("h")]
    assert sample.exists() and not lapsed.exists()


def test_an_upload_renews_its_owners_reference_and_reads_old_list_files() -> None:
    owners_file = usage.dataset_owners_file(sha("a"))
    write_json(owners_file, ["alice"])
    access.add_owner(owners_file, "bob", now=NOW)
    references = access.owner_references(owners_file)
    assert references["bob"] == NOW and references["alice"] == pytest.approx(owners_file.stat().st_mtime)
    access.add_owner(owners_file, "alice", now=NOW + 1)
    assert access.owner_references(owners_file)["alice"] == NOW + 1
    assert access.stored_owners(owners_file) == ["alice", "bob"]


def test_leftovers_of_interrupted_work_go_and_recent_work_stays() -> None:
    uploads = storage.uploads_dir()
    uploads.mkdir(parents=True)
    ended = uploads / f"{sha('a')}.zip"  # its validation failed, its worker killed before cleaning up
    ended.write_bytes(b"z" * 100)
    os.utime(ended, (NOW - 2 * DAY_S, NOW - 2 * DAY_S))
    stored_run("val-a", finished_days_ago=1, kind=VALIDATE, data=str(ended))
    again = uploads / f"{sha('d')}.zip"  # uploaded again after its validation failed: a new job comes
    again.write_bytes(b"z")
    stored_run("val-d", finished_days_ago=1, kind=VALIDATE, data=str(again))
    validating = uploads / f"{sha('b')}.zip"
    validating.write_bytes(b"z")
    stored_run("val-b", finished_days_ago=None, kind=VALIDATE, data=str(validating))
    just_written = uploads / f"{sha('c')}.zip"  # its job not submitted yet
    just_written.write_bytes(b"z")
    (storage.runs_dir() / ".trash-gone-abc123").mkdir()  # a deletion interrupted half-way
    staging = storage.datasets_dir() / ".staging-old"
    staging.mkdir(parents=True)
    os.utime(staging, (NOW - 2 * DAY_S, NOW - 2 * DAY_S))
    (storage.datasets_dir() / ".staging-now").mkdir()  # an ingestion under way
    storage.races_dir().mkdir()
    write_json(storage.races_dir() / "over.json", {"lanes": [{"case": 1, "seed": 0, "run_id": "gone"}]})
    write_json(storage.races_dir() / "live.json", {"lanes": [{"case": 1, "seed": 0, "run_id": "val-b"}]})

    swept = retention.sweep(Limits(), now=NOW)

    assert [gone.name for gone in swept.uploads] == [ended.name]
    assert sorted(gone.name for gone in swept.leftovers) == [
        "datasets/.staging-old",
        "runs/.trash-gone-abc123",
    ]
    assert [gone.name for gone in swept.races] == ["over"]
    assert (
        validating.exists() and just_written.exists() and (storage.datasets_dir() / ".staging-now").exists()
    )
    assert (storage.races_dir() / "live.json").exists()


def test_the_sweep_is_idempotent() -> None:
    stored_run("old", finished_days_ago=40)
    stored_dataset(sha("a"), {"alice": 40})
    first = retention.sweep(KEEP, now=NOW)
    assert first.run_ids == ["old"] and first.digests == [sha("a")]
    assert not any(retention.sweep(KEEP, now=NOW).groups().values())


def test_the_app_sweeps_at_most_once_an_hour() -> None:
    stored_run("old", finished_days_ago=40)
    assert retention.sweep_if_due(KEEP, every_s=0, now=NOW).run_ids == ["old"]  # at start-up
    stored_run("old-too", finished_days_ago=40)
    assert retention.sweep_if_due(KEEP, now=NOW + 60) is None
    assert retention.sweep_if_due(KEEP, now=NOW + 3601).run_ids == ["old-too"]


def test_a_finished_run_can_be_deleted_now_and_an_active_one_cannot() -> None:
    run = stored_run("done", finished_days_ago=1)
    retention.pin(run)
    assert retention.delete(run) > 2048
    assert not run.directory.exists() and not list(storage.runs_dir().iterdir())
    queued = stored_run("queued", finished_days_ago=None)
    with pytest.raises(retention.CannotDelete, match="cancel it first"):
        retention.delete(queued)
    assert queued.status_file.exists()


@pytest.mark.usefixtures("home")
def test_runs_of_the_real_worker_go_when_finished_and_stay_while_running() -> None:
    done = jobs.submit({"seconds": 0.1}, target=SLEEPY, owner="alice")
    wait_for_state(done, "done")
    running = jobs.submit({}, target=FOREVER, queued=False, owner="bob")
    wait_until(lambda: jobs.status(running).state == "running", "a running run")
    later = time.time() + 31 * DAY_S

    swept = retention.sweep(KEEP, now=later)

    assert swept.run_ids == [done]
    assert [row.run_id for row in jobs.list_runs()] == [running]
    with pytest.raises(retention.CannotDelete):
        retention.delete(Run.open(running))
    jobs.cancel(running)
    wait_for_state(running, "cancelled")
    wait_until(lambda: not queue.worker_alive(storage.runs_dir() / running), "the worker's exit")
    assert retention.sweep(KEEP, now=time.time() + 31 * DAY_S).run_ids == [running]


def test_the_command_line_lists_what_would_go_then_deletes_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_KEEP_RUNS_DAYS", "30")
    monkeypatch.delenv(access.PASSWORD_HASH_ENV, raising=False)
    stored_run("old", finished_days_ago=40)
    stored_dataset(sha("a"), {"alice": 40})
    no_secrets = ["--secrets", str(tmp_path / "none.toml")]

    assert cli_main(["sweep", "--dry-run", *no_secrets]) == 0
    dry = capsys.readouterr().out
    assert "Would delete" in dry and "old" in dry and sha("a") in dry and "KiB" in dry
    assert (storage.runs_dir() / "old").exists() and (storage.datasets_dir() / sha("a")).exists()

    assert cli_main(["sweep", *no_secrets]) == 0
    assert "Deleted" in capsys.readouterr().out
    assert not (storage.runs_dir() / "old").exists() and not (storage.datasets_dir() / sha("a")).exists()
    assert cli_main(["sweep", *no_secrets]) == 0
    assert "Nothing to delete" in (again := capsys.readouterr().out) and "kept 30 days" in again


def test_a_shared_instance_keeps_runs_thirty_days_unless_configured() -> None:
    shared = {"access": {"password_hash": "scrypt$00$00"}}
    assert access.instance_limits(shared).keep_runs_days == 30.0
    assert access.instance_limits({}).keep_runs_days is None
    assert access.instance_limits({**shared, "limits": {"keep_runs_days": "none"}}).keep_runs_days is None
