"""Faults a shared instance meets, caused for real: a worker killed, crashed or out of memory, and
a full disk (a small tmpfs as the home folder). Each leaves its run failed with the reason, and
nothing half-written. A server killed mid-run and an upload cut off half-way are in
``browser/test_restart_browser.py``."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.data.zips import classes, make_zip, png
from helpers_jobs import TINY_TRAINING, colour_folders, kill_workers, wait_for_state, wait_until
from helpers_pages import open_page
from helpers_stored import KEEP, stored_run

from core import jobs, storage
from core.cli import main
from core.data.samples import sample_path
from core.housekeeping import retention
from core.jobs import uploads
from core.jobs.run import STEP_DELAY_ENV, Run
from core.training.events import read_events

MODEL_FILES = {"model.pt2", "labels.json", "preprocess.json", "MODEL_CARD.md"}


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home folder on a 24 MiB tmpfs of its own, so that a test can fill it for real."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
        check=False,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {made.stderr.strip()}")
    monkeypatch.setenv("TRANSFER_LAB_HOME", str(mount))
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    try:
        yield mount
    finally:
        kill_workers(mount)
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with one file until only ``leave`` bytes are free; returns the file."""
    filler = disk / "filler"
    info = os.statvfs(disk)
    with open(filler, "ab") as out:
        os.posix_fallocate(out.fileno(), 0, filler.stat().st_size + info.f_bavail * info.f_frsize - leave)
    return filler


def leftovers(disk: Path) -> list[str]:
    """Temporary files and staging folders: what a write cut short would leave."""
    return [str(p.relative_to(disk)) for p in disk.rglob("*") if ".tmp" in p.name or ".staging" in p.name]


def batch_seen(run_id: str) -> bool:
    return any(event.type == "batch" for event in read_events(storage.runs_dir() / run_id))


def shown(markdown: str) -> str:
    """A message as the page shows it: its Markdown escapes gone."""
    return markdown.replace("\\", "")


# ------------------------------------------------------------------ a worker killed, out of memory


def test_a_worker_killed_mid_epoch_fails_saying_so_and_the_next_run_trains(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = colour_folders(tmp_path / "colours")
    monkeypatch.setenv(STEP_DELAY_ENV, "1")  # a second per batch: time to kill it mid-epoch
    run_id = jobs.submit({**TINY_TRAINING, "data": str(data)})
    pid = wait_for_state(run_id, "running", timeout_s=60).pid
    wait_until(lambda: batch_seen(run_id), "a batch trained", timeout_s=60)

    os.kill(pid, signal.SIGKILL)  # what the out-of-memory killer does
    final = wait_for_state(run_id, "failed", timeout_s=10)

    assert final.message.startswith(
        f"the worker (pid {pid}) was killed by SIGKILL (the system's out-of-memory killer does this"
    )
    assert not Run.open(run_id).model_dir.exists() and leftovers(home) == []
    monkeypatch.delenv(STEP_DELAY_ENV)
    after = jobs.submit({**TINY_TRAINING, "data": str(data)})  # its slot was given back
    assert wait_for_state(after, "done", timeout_s=120).message == ""
    assert {p.name for p in Run.open(after).model_dir.iterdir()} == MODEL_FILES


def test_a_worker_that_exits_without_reporting_fails_with_its_exit_code(home: Path) -> None:
    run_id = jobs.submit({}, target="tests.helpers_jobs:vanishing")
    final = wait_for_state(run_id, "failed")
    pid = final.pid
    assert final.message == (
        f"the worker (pid {pid}) exited with code 3; last words: calling the native library"
    )
    assert storage.read_json(Run.open(run_id).exit_file) == {"pid": pid, "returncode": 3}


def test_a_run_out_of_memory_fails_with_one_line(home: Path) -> None:
    run_id = jobs.submit({}, target="tests.helpers_jobs:greedy")
    final = wait_for_state(run_id, "failed")
    assert final.message == "MemoryError: out of memory; a smaller batch or image size needs less"
    assert jobs.list_runs()[0].state == "failed"  # the app goes on listing runs


# ------------------------------------------------------------------------------------ a full disk


def test_a_training_that_fills_the_disk_fails_saying_so_and_leaves_no_half_model(
    small_disk: Path, tmp_path: Path
) -> None:
    data = colour_folders(tmp_path / "colours")  # the data live elsewhere; the run fills the home
    fill(small_disk, leave=1024 * 1024)  # room for the run's records, not for its model
    run_id = jobs.submit({**TINY_TRAINING, "data": str(data)})
    final = wait_for_state(run_id, "failed", timeout_s=120)

    run = Run.open(run_id)
    assert final.message == (
        f"the disk is full: could not write {run.model_dir}/model.pt2; free some space there and try again"
    )
    assert not run.model_dir.exists() and leftovers(small_disk) == []


def test_a_disk_full_to_the_last_byte_still_says_how_the_run_ended(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STEP_DELAY_ENV, "0.5")  # time to fill the disk mid-epoch
    run_id = jobs.submit({**TINY_TRAINING, "data": str(colour_folders(tmp_path / "colours"))})
    wait_until(lambda: batch_seen(run_id), "a batch trained", timeout_s=60)
    filler = fill(small_disk)  # not even status.json can be written now

    seen = wait_for_state(run_id, "failed", timeout_s=30)  # the page's reconcile: no traceback
    assert seen.message.startswith(f"the disk is full: could not write {small_disk}/runs/{run_id}/")
    assert Run.open(run_id).status().state == "running"  # what it could not write
    filler.unlink()
    recorded = jobs.reconcile(run_id)  # once there is room, the end is recorded
    assert Run.open(run_id).status().state == "failed"
    assert "stopped because the disk was full" in recorded.message
    assert leftovers(small_disk) == []


def test_a_run_submitted_to_a_full_disk_is_refused_and_leaves_no_folder(small_disk: Path) -> None:
    fill(small_disk)
    with pytest.raises(OSError, match="No space left"):
        jobs.submit({"seconds": 0.1}, target="tests.helpers_jobs:sleepy")
    assert list(storage.runs_dir().iterdir()) == [] and leftovers(small_disk) == []


def test_the_command_line_says_the_disk_is_full_in_one_line(small_disk: Path, capsys) -> None:
    fill(small_disk)
    argv = ["train", str(sample_path("faces")), "--backbone", "efficientnet_lite0", "--epochs", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"python -m core train: the disk is full: could not write {small_disk}/")
    assert len(err.splitlines()) == 1 and leftovers(small_disk) == []


def test_an_upload_to_a_full_disk_is_one_line_on_the_page_and_leaves_nothing(small_disk: Path) -> None:
    filler = fill(small_disk)
    at = open_page("pages/train.py")  # the default sample cannot be cached either: said, not raised
    assert shown(at.error[0].value).startswith("This data cannot be used: the disk is full: could not write")
    at.segmented_control(key="train.data_source").set_value("upload").run()
    zipped = make_zip(classes({"cats": 4, "dogs": 4}))
    at.file_uploader(key="train.upload").set_value(("pets.zip", zipped, "application/zip")).run()

    assert not at.exception
    [error] = at.error
    assert shown(error.value).startswith("This upload could not be kept: the disk is full: could not write")
    written = [p for p in small_disk.rglob("*") if p.is_file() and p != filler]
    assert [p for p in written if p.suffix != ".lock" or p.stat().st_size] == []  # empty locks hold no data


def test_an_upload_whose_data_set_does_not_fit_fails_saying_so_and_leaves_nothing(small_disk: Path) -> None:
    images = {
        f"{label}/{i}.png": png(i + 100 * n, (96, 96)) for n, label in enumerate("ab") for i in range(40)
    }
    zipped = make_zip(images)
    fill(small_disk, leave=len(zipped) + 256 * 1024)  # room for the zip, not for its images too
    digest = uploads.accept_upload(zipped, "big.zip")
    job = uploads.upload_state(digest).job_id
    final = wait_until(lambda: (s := jobs.reconcile(job)).state == "failed" and s, "failed", timeout_s=60)

    assert final.message.startswith("the disk is full: could not write ")
    assert uploads.upload_state(digest).refusal.startswith("the disk is full")
    assert not (storage.datasets_dir() / digest).exists() and list(storage.uploads_dir().iterdir()) == []
    assert leftovers(small_disk) == []


def test_retention_still_sweeps_a_full_disk(small_disk: Path) -> None:
    old = stored_run("old", finished_days_ago=40)
    fill(small_disk)

    swept = retention.sweep_if_due(KEEP, every_s=0)  # it cannot note the time: it sweeps anyway

    assert swept is not None and swept.run_ids == ["old"] and not old.directory.exists()
