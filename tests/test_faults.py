"""Faults a shared instance meets, caused for real: a worker killed or out of memory, a full disk
(a small tmpfs as the home folder), a server killed mid-run and started again, an upload cut off
half-way. Each leaves its run failed or interrupted with the reason, and nothing half-written."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import _stop, start_app
from fixtures.data.zips import classes, make_zip, png
from helpers_jobs import TINY_TRAINING, colour_folders
from test_jobs import _kill_workers, home, process_gone, wait_for_state, wait_until
from test_pages_training import open_page

from core import jobs, storage
from core.jobs import targets
from core.jobs.run import STEP_DELAY_ENV, Run
from core.training.events import read_events

MODEL_FILES = {"model.pt2", "labels.json", "preprocess.json"}
# The jobs tests' fixture, used here by name: one run at a time, no GPU, no worker left behind.
__all__ = ["home"]


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
        _kill_workers(mount)
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
    pid = wait_for_state(run_id, "running", timeout_s=60)["pid"]
    wait_until(lambda: batch_seen(run_id), "a batch trained", timeout_s=60)

    os.kill(pid, signal.SIGKILL)  # what the out-of-memory killer does
    final = wait_for_state(run_id, "failed", timeout_s=10)

    assert final["message"].startswith(
        f"the worker (pid {pid}) was killed by SIGKILL (the system's out-of-memory killer does this"
    )
    assert not Run.open(run_id).model_dir.exists() and leftovers(home) == []
    monkeypatch.delenv(STEP_DELAY_ENV)
    after = jobs.submit({**TINY_TRAINING, "data": str(data)})  # its slot was given back
    assert wait_for_state(after, "done", timeout_s=120)["message"] == ""
    assert {p.name for p in Run.open(after).model_dir.iterdir()} == MODEL_FILES


def test_a_worker_that_exits_without_reporting_fails_with_its_exit_code(home: Path) -> None:
    run_id = jobs.submit({}, target="tests.helpers_jobs:vanishing")
    final = wait_for_state(run_id, "failed")
    pid = final["pid"]
    assert final["message"] == (
        f"the worker (pid {pid}) exited with code 3; last words: calling the native library"
    )
    assert storage.read_json(Run.open(run_id).exit_file) == {"pid": pid, "returncode": 3}


def test_a_run_out_of_memory_fails_with_one_line(home: Path) -> None:
    run_id = jobs.submit({}, target="tests.helpers_jobs:greedy")
    final = wait_for_state(run_id, "failed")
    assert final["message"] == "MemoryError: out of memory; a smaller batch or image size needs less"
    assert jobs.list_runs()[0]["state"] == "failed"  # the app goes on listing runs


# ------------------------------------------------------------------------------------ a full disk


def test_a_training_that_fills_the_disk_fails_saying_so_and_leaves_no_half_model(
    small_disk: Path, tmp_path: Path
) -> None:
    data = colour_folders(tmp_path / "colours")  # the data live elsewhere; the run fills the home
    fill(small_disk, leave=1024 * 1024)  # room for the run's records, not for its model
    run_id = jobs.submit({**TINY_TRAINING, "data": str(data)})
    final = wait_for_state(run_id, "failed", timeout_s=120)

    run = Run.open(run_id)
    assert final["message"] == (
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
    assert seen["message"].startswith(f"the disk is full: could not write {small_disk}/runs/{run_id}/")
    assert Run.open(run_id).status()["state"] == "running"  # what it could not write
    filler.unlink()
    recorded = jobs.reconcile(run_id)  # once there is room, the end is recorded
    assert Run.open(run_id).status()["state"] == "failed"
    assert "stopped because the disk was full" in recorded["message"]
    assert leftovers(small_disk) == []


def test_a_run_submitted_to_a_full_disk_is_refused_and_leaves_no_folder(small_disk: Path) -> None:
    fill(small_disk)
    with pytest.raises(OSError, match="No space left"):
        jobs.submit({"seconds": 0.1}, target="tests.helpers_jobs:sleepy")
    assert list(storage.runs_dir().iterdir()) == [] and leftovers(small_disk) == []


def test_an_upload_to_a_full_disk_is_one_line_on_the_page_and_leaves_nothing(small_disk: Path) -> None:
    filler = fill(small_disk)
    at = open_page("pages/train.py")  # the default sample cannot be cached either: said, not raised
    assert shown(at.error[0].value).startswith("This data cannot be used: the disk is full: could not write")
    at.segmented_control(key="source").set_value("upload").run()
    zipped = make_zip(classes({"cats": 4, "dogs": 4}))
    at.file_uploader(key="upload").set_value(("pets.zip", zipped, "application/zip")).run()

    assert not at.exception
    [error] = at.error
    assert shown(error.value).startswith("This upload could not be kept: the disk is full: could not write")
    assert [p for p in small_disk.rglob("*") if p.is_file() and p != filler] == []


def test_an_upload_whose_data_set_does_not_fit_fails_saying_so_and_leaves_nothing(small_disk: Path) -> None:
    images = {
        f"{label}/{i}.png": png(i + 100 * n, (96, 96)) for n, label in enumerate("ab") for i in range(40)
    }
    zipped = make_zip(images)
    fill(small_disk, leave=len(zipped) + 256 * 1024)  # room for the zip, not for its images too
    digest = targets.accept_upload(zipped, "big.zip")
    job = targets.upload_state(digest).job_id
    final = wait_until(lambda: (s := jobs.reconcile(job))["state"] == "failed" and s, "failed", timeout_s=60)

    assert final["message"].startswith("the disk is full: could not write ")
    assert targets.upload_state(digest).refusal.startswith("the disk is full")
    assert not (storage.datasets_dir() / digest).exists() and list(storage.uploads_dir().iterdir()) == []
    assert leftovers(small_disk) == []


# ------------------------------------------------------------------------------ the server, restarted


def test_a_server_killed_mid_run_loses_no_run(home: Path, browser, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers outlive the server: a run whose worker lives keeps going and shows after the
    restart; one whose worker died while the server was down is marked interrupted."""
    env = {"TRANSFER_LAB_MAX_RUNS": "2"}
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "2")
    first = start_app(home, env)
    survivor = jobs.submit({"seconds": 12}, target="tests.helpers_jobs:sleepy", run_id="survivor")
    victim = jobs.submit({}, target="tests.helpers_jobs:forever", run_id="victim")
    wait_until(
        lambda: all(Run.open(r).status().get("state") == "running" for r in (survivor, victim)),
        "both running",
    )
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    first.log.close()
    victim_pid = Run.open(victim).status()["pid"]
    os.kill(victim_pid, signal.SIGKILL)  # its worker dies while no server is up
    wait_until(lambda: process_gone(victim_pid), "victim's worker gone")

    second = start_app(home, env, port=urlparse(first.url).port)
    try:
        tab = browser.new_page()
        tab.goto(second.url)
        sidebar = tab.locator("[data-testid='stSidebar']")
        sidebar.get_by_text("· running").wait_for(timeout=30_000)  # recovered, then listed
        assert Run.open(survivor).status()["state"] == "running"
        assert process_gone(Run.open(survivor).status()["pid"]) is False
        interrupted = Run.open(victim).status()
        assert interrupted["state"] == "interrupted"
        assert interrupted["message"].startswith("its worker was gone when the app started")
        assert wait_for_state(survivor, "done", timeout_s=30)["message"] == ""
        tab.close()
    finally:
        _stop(second.process, second.log)


# --------------------------------------------------------------------------- an upload cut off


def test_an_upload_cut_off_half_way_leaves_nothing(home: Path, browser) -> None:
    """Streamlit receives a whole file before our code sees it: half an upload, on a real
    session, is dropped by the server and never reaches the home folder."""
    app = start_app(home)
    try:
        context = browser.new_context()
        tab = context.new_page()
        captured: list = []

        def hold(route) -> None:  # the browser's own upload is stopped, and told us where it went
            captured.append(route.request)
            route.abort()

        tab.route("**/_stcore/upload_file/**", hold)
        tab.goto(f"{app.url}/train?upload={'0' * 64}")  # the upload source, without a sample to check
        tab.locator("input[type='file']").set_input_files(
            files=[
                {
                    "name": "pets.zip",
                    "mimeType": "application/zip",
                    "buffer": make_zip(classes({"a": 3, "b": 3})),
                }
            ]
        )
        for _ in range(200):  # Playwright runs the route handler only while it is called
            if captured:
                break
            tab.wait_for_timeout(100)
        request = captured[0]
        before = sorted(str(p) for p in home.rglob("*"))

        where = (app.url, urlparse(request.url).path, request.headers, context.cookies())
        put_upload(*where, cut_off=True)
        # The same upload whole is taken (the route, session and token were right), and kept in
        # Streamlit's memory: our code sees a file only once the page reruns with it.
        assert put_upload(*where, cut_off=False).split()[1] in ("200", "204")

        with urllib.request.urlopen(f"{app.url}/_stcore/health") as health:
            assert health.status == 200  # the server took no harm: what a reverse proxy checks
        assert sorted(str(p) for p in home.rglob("*")) == before
        assert not (home / "uploads").exists() and not (home / "datasets").exists()
        context.close()
    finally:
        _stop(app.process, app.log)


def put_upload(url: str, path: str, headers: dict[str, str], cookies: list[dict], *, cut_off: bool) -> str:
    """PUT a multipart upload of a zip to Streamlit's upload endpoint as the browser would, with
    its session's cookie and XSRF token; ``cut_off``: hang up after half of it. Returns the
    response's status line ('' when cut off)."""
    boundary = "faultsboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="pets.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + make_zip(classes({"a": 30, "b": 30}))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in cookies)
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {urlparse(url).netloc}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nCookie: {cookie}\r\n"
        f"X-Xsrftoken: {headers.get('x-xsrftoken', '')}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((urlparse(url).hostname, urlparse(url).port), timeout=10) as connection:
        if cut_off:
            connection.sendall(head.encode() + body[: len(body) // 2])
            return ""
        connection.sendall(head.encode() + body)
        return connection.recv(4096).decode(errors="replace").split("\r\n")[0]
