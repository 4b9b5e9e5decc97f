"""The job queue, through real worker processes running the small targets of ``helpers_jobs``."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers_jobs import (
    FOREVER,
    SLEEPY,
    TINY_TRAINING,
    colour_folders,
    event_types,
    process_gone,
    run_dir,
    wait_for_state,
    wait_until,
)

from core import jobs, storage
from core.jobs import local, queue
from core.jobs import run as run_module
from core.jobs.run import CANCELLED_MESSAGE, Run, RunState, StatusKeeper
from core.storage import read_record, write_json
from core.training.events import read_events

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("state", "message", "expected"),
    [
        (RunState.FAILED, "ValueError: boom", [("error", None), ("status", "failed")]),
        (RunState.DONE, "", [("status", "done")]),
    ],
)
def test_the_events_are_complete_by_the_time_the_status_names_the_end(
    state: RunState, message: str, expected: list, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever sees the final state in status.json finds the whole story in the events."""
    directory = run_dir("20260101-000000-boom")
    directory.mkdir(parents=True)
    events_at_the_end = []

    def write_and_look(path: Path, data: Any) -> None:
        write_json(path, data)
        if path.name == "status.json" and data["state"] == state:
            events_at_the_end.append([(e.type, getattr(e, "state", None)) for e in read_events(directory)])

    monkeypatch.setattr(run_module, "write_json", write_and_look)
    with StatusKeeper.take(Run(directory)) as keeper:
        keeper.set_state(state, message)

    assert events_at_the_end == [expected]


@pytest.mark.parametrize("ending", ["done", "failed"])
def test_recording_an_outcome_leaves_the_processs_signal_handlers_as_they_were(
    home: Path, ending: str
) -> None:
    """An ignored SIGTERM passes to every process started afterwards: a multiprocessing pool, which
    stops its workers with SIGTERM, then waits for them for ever (bench/scale.py hung so in the
    suite, after a test had recorded an outcome in the test process)."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)
    directory = run_dir("20260101-000000-ends")
    directory.mkdir(parents=True)

    with StatusKeeper.take(Run(directory)) as keeper, contextlib.suppress(RuntimeError), keeper.outcome():
        if ending == "failed":
            raise RuntimeError("boom")
    child_ignores = subprocess.run(
        [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip

    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)) == before
    assert child_ignores == "False"
    assert storage.read_json(directory / "status.json")["state"] == ending


def test_the_traceback_is_in_the_log_by_the_time_the_status_says_failed(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.jobs import worker

    directory = run_dir("20260101-000000-boom")
    write_json(directory / "plan.json", {})
    log = io.StringIO()  # the worker's stderr, which is its log
    monkeypatch.setattr(sys, "stderr", log)
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # set by the worker for itself
        monkeypatch.setenv(name, str(home / "cache"))
    log_when_failed = []

    def write_and_look(path: Path, data: Any) -> None:
        write_json(path, data)
        if path.name == "status.json" and data["state"] == "failed":
            log_when_failed.append(log.getvalue())

    monkeypatch.setattr(run_module, "write_json", write_and_look)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        code = worker.main([str(directory), "--target", "tests.helpers_jobs:failing", "--unqueued"])
    finally:
        signal.signal(signal.SIGTERM, sigterm)

    assert code == 1
    assert len(log_when_failed) == 1 and "Traceback" in log_when_failed[0]


def test_a_missing_training_entry_point_fails_the_run_readably(home: Path) -> None:
    run_id = jobs.submit({}, target="tests.no_such_module:run")

    final = wait_for_state(run_id, "failed")

    assert final.message == "ModuleNotFoundError: No module named 'tests.no_such_module'"


def test_cancel_kills_a_worker_that_ignores_it(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "CANCEL_GRACE_S", 0.5)
    run_id = jobs.submit({}, target="tests.helpers_jobs:stubborn")
    pid = wait_for_state(run_id, "running").pid
    wait_until(lambda: "still training" in Run.open(run_id).log_tail(), "training output")

    jobs.cancel(run_id)

    assert wait_for_state(run_id, "cancelled", timeout_s=10).message == CANCELLED_MESSAGE
    wait_until(lambda: process_gone(pid), "worker exit", timeout_s=5)


def test_a_job_past_its_time_limit_says_so_even_if_the_limit_kills_it(home: Path) -> None:
    # A native library may take SIGALRM back, and then the signal ends the process at once:
    # the run must still say why it ended, not that its worker died without a word.
    run_id = jobs.submit({}, target="tests.helpers_jobs:alarm_default", queued=False, time_limit_s=0.5)

    final = wait_for_state(run_id, "failed", timeout_s=15)

    assert final.message == "stopped after 0.5 s, the time limit for this job"
    assert event_types(run_id)[-1] == "failed"


def test_a_second_run_waits_in_line_and_starts_after_the_first(home: Path) -> None:
    first = jobs.submit({"seconds": 1.0}, target=SLEEPY)
    wait_for_state(first, "running")

    second = jobs.submit({"seconds": 0.1}, target=SLEEPY)
    queued = jobs.status(second)

    assert queued.state == "queued"
    assert queued.queue_position == jobs.queue_position(second) == 1
    done_second = wait_for_state(second, "done", timeout_s=15)
    assert done_second.started >= jobs.status(first).finished


def test_at_most_max_concurrent_runs_train_at_once(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "2")
    runs = [jobs.submit({}, target=FOREVER) for _ in range(3)]

    running = [wait_for_state(run_id, "running") for run_id in runs[:2]]
    time.sleep(0.5)  # ample time for a third worker to take a slot, were one free

    assert sorted(s.slot for s in running) == [0, 1]
    assert jobs.status(runs[2]).state == "queued"
    assert jobs.queue_position(runs[2]) == 1
    jobs.cancel(runs[0])
    wait_for_state(runs[2], "running")


def test_simultaneous_submissions_each_get_their_own_place_in_line(home: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda _: jobs.submit({}, target=FOREVER), range(4)))

    wait_until(lambda: any(jobs.status(r).state == "running" for r in runs), "a running run")
    places = sorted(jobs.queue_position(r) or 0 for r in runs)

    assert places == [0, 1, 2, 3]
    assert len(set(runs)) == 4


def test_cancel_takes_a_queued_run_out_of_the_line(home: Path) -> None:
    first = jobs.submit({}, target=FOREVER)
    wait_for_state(first, "running")
    second = jobs.submit({}, target=FOREVER)
    third = jobs.submit({}, target=FOREVER)
    wait_until(lambda: jobs.queue_position(third) == 2, "third run second in line")

    jobs.cancel(second)

    assert wait_for_state(second, "cancelled", timeout_s=5).queue_position is None
    assert jobs.queue_position(third) == 1
    assert jobs.status(first).state == "running"


def test_a_worker_holds_its_run_s_lock_until_its_process_has_ended(home: Path) -> None:
    """A reader that finds the lock free takes the worker for ended and asks for its exit status
    (what a run that could not record its end, on a full disk, is judged by)."""
    run_id = jobs.submit({}, target="tests.helpers_jobs:lingering")
    pid = wait_for_state(run_id, "done").pid
    run = Run.open(run_id)
    assert not process_gone(pid) and StatusKeeper.take(run) is None  # still ending: still held
    (run.directory / "let_go").touch()
    wait_until(lambda: process_gone(pid), "worker exit")
    keeper = StatusKeeper.take(run)
    assert keeper is not None
    keeper.release()


def test_a_killed_worker_leaves_its_run_failed_with_its_last_words(home: Path) -> None:
    run_id = jobs.submit({}, target=FOREVER)
    pid = wait_for_state(run_id, "running").pid
    wait_until(lambda: "still training" in Run.open(run_id).log_tail(), "training output")

    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), "worker exit", timeout_s=5)
    assert jobs.status(run_id).state == "running"  # status only reads; reconcile looks
    final = wait_for_state(run_id, "failed", timeout_s=5)

    assert f"the worker (pid {pid}) was killed by SIGKILL (the system's out-of-memory killer" in final.message
    assert "last words: still training, step" in final.message
    assert event_types(run_id)[-2:] == ["error", "failed"]
    # Its slot went with it: the next run still gets to train.
    assert wait_for_state(jobs.submit({"seconds": 0.1}, target=SLEEPY), "done")


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen]:
    """An unrelated process, as a dead worker's recycled pid may belong to by now."""
    process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def orphan_run(pid: int, **status: Any) -> Path:
    """A run left ``running`` by a worker that died long ago, its pid now someone else's."""
    directory = run_dir("20260101-000000-dead")
    an_hour_ago = time.time() - 3600
    write_json(directory / "status.json", {"state": "running", "pid": pid, "heartbeat": an_hour_ago} | status)
    (directory / "worker.log").write_text("epoch 3/10\n")
    return directory


def test_a_stale_run_never_gets_a_stranger_with_its_old_pid_killed(
    home: Path, stranger: subprocess.Popen
) -> None:
    orphan = orphan_run(stranger.pid)
    held = queue.try_lock(orphan / "worker.lock")  # another page, recording the run's end

    assert jobs.reconcile(orphan.name).state == "running"
    os.close(held)
    final = jobs.reconcile(orphan.name)

    assert stranger.poll() is None
    assert final.state == "failed"
    assert f"the worker (pid {stranger.pid}) died without reporting" in final.message


def test_cancelling_a_run_whose_worker_is_gone_signals_no_stranger(
    home: Path, stranger: subprocess.Popen
) -> None:
    orphan = orphan_run(stranger.pid, heartbeat=time.time())
    held = queue.try_lock(orphan / "worker.lock")

    jobs.cancel(orphan.name)
    os.close(held)

    assert stranger.poll() is None
    assert jobs.reconcile(orphan.name).state == "cancelled"


def test_status_outlives_the_process_that_submitted(home: Path) -> None:
    def python(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.strip()

    run_id = python(f"from core import jobs; print(jobs.submit({{'seconds': 1.5}}, target={SLEEPY!r}))")
    read_state = f"from core import jobs; print(jobs.status({run_id!r}).state)"

    assert python(read_state) in ("queued", "running")
    wait_for_state(run_id, "done", timeout_s=15)
    assert python(read_state) == "done"


def test_recover_marks_runs_left_running_as_interrupted(home: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = run_dir("20260101-000000-dead")
    write_json(orphan / "status.json", {"state": "running", "pid": gone.pid, "heartbeat": time.time()})
    (orphan / "worker.log").write_text("epoch 3/10\n")
    alive = jobs.submit({}, target=FOREVER)
    wait_for_state(alive, "running")

    assert jobs.recover() == [orphan.name]

    interrupted = jobs.status(orphan.name)
    assert interrupted.state == "interrupted"
    assert "last words: epoch 3/10" in interrupted.message
    assert event_types(orphan.name) == ["interrupted"]
    assert jobs.status(alive).state == "running"
    assert jobs.recover() == []


def test_list_runs_shows_the_newest_first_with_its_plan(home: Path) -> None:
    plan = {"backbone": "resnet18", "case": 1, "data": "flowers", "seconds": 0.1, "accuracy": 0.9}
    older = jobs.submit(plan, target=SLEEPY)
    newer = jobs.submit({**plan, "backbone": "vgg16"}, target=SLEEPY)
    wait_for_state(newer, "done", timeout_s=15)

    rows = jobs.list_runs()

    assert [r.run_id for r in rows] == [newer, older]
    volatile = {"submitted": None, "started": None, "finished": None, "heartbeat": None}
    where = {"pid": None, "host": None, "slot": None, "gpu": None}
    assert replace(rows[0], **volatile, **where) == jobs.RunRow(
        run_id=newer,
        state=RunState.DONE,
        backbone="vgg16",
        case=1,
        data="flowers",
        dataset_name="flowers",  # what the pages name the run by
        owner="local",  # whose run it is (an admin's table shows it)
        best_val_accuracy=0.9,
    )


def finished_run(run_id: str, accuracy: float) -> Path:
    directory = run_dir(run_id)
    write_json(directory / "status.json", {"state": "done", "pid": None, "submitted": 1.0, "message": ""})
    write_json(directory / "plan.json", {"backbone": "resnet18", "case": 2, "data": "flowers"})
    write_json(directory / "metrics.json", {"best_val_accuracy": accuracy, "history": [{"epoch": 1}]})
    return directory


@pytest.fixture
def files_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``run/file`` for every JSON file ``core.jobs`` parses from here on."""
    read: list[str] = []

    def spy(path: Path, default: Any = None, fields: Mapping[str, Any] | None = None) -> Any:
        read.append(f"{path.parent.name}/{path.name}")
        return read_record(path, default, fields)

    monkeypatch.setattr(local, "read_record", spy)
    monkeypatch.setattr(run_module, "read_record", spy)
    return read


def test_active_runs_lists_the_running_run_and_reads_nothing_of_finished_ones(
    home: Path, files_read: list[str]
) -> None:
    finished = finished_run("20260101-000000-done", 0.9).name
    running = jobs.submit({"backbone": "vgg16", "case": 1}, target=FOREVER)
    wait_for_state(running, "running")
    files_read.clear()

    active = jobs.active_runs()

    assert [(r.run_id, r.state, r.backbone, r.case) for r in active] == [(running, "running", "vgg16", 1)]
    assert active[0].best_val_accuracy is None  # a running run has measured nothing yet
    assert f"{finished}/status.json" in files_read
    others = [name for name in files_read if not name.endswith("/status.json")]
    assert set(others) <= {f"{running}/plan.json", f"{running}/run.json"}  # parsed once, maybe earlier


def test_list_runs_parses_a_finished_run_once_until_its_files_change(
    home: Path, files_read: list[str]
) -> None:
    run = finished_run("20260101-000000-done", 0.75)

    first, second = jobs.list_runs(), jobs.list_runs()
    write_json(run / "metrics.json", {"best_val_accuracy": 0.8})
    third = jobs.list_runs()

    assert [rows[0].best_val_accuracy for rows in (first, second, third)] == [0.75, 0.75, 0.8]
    assert first == second and (first[0].backbone, first[0].case) == ("resnet18", 2)
    assert files_read.count(f"{run.name}/metrics.json") == 2
    assert files_read.count(f"{run.name}/plan.json") == 1


def test_nothing_is_written_outside_the_home_folder(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = {name: tmp_path / name for name in ("user", "tmp", "cwd")}
    for folder in elsewhere.values():
        folder.mkdir()
    monkeypatch.setenv("HOME", str(elsewhere["user"]))
    monkeypatch.setenv("TMPDIR", str(elsewhere["tmp"]))
    monkeypatch.chdir(elsewhere["cwd"])

    run_id = jobs.submit({"seconds": 0.1}, target=SLEEPY)
    wait_for_state(run_id, "done")
    wait_until(lambda: Run.open(run_id).exit_file.exists(), "exit status")  # the reaper writes it last

    assert {name: list(folder.iterdir()) for name, folder in elsewhere.items()} == {
        "user": [],
        "tmp": [],
        "cwd": [],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", home.name, "tmp", "user"]
    assert {p.name for p in run_dir(run_id).iterdir()} == {
        "plan.json",
        "run.json",
        "status.json",
        "events.jsonl",
        "metrics.json",
        "worker.log",
        "worker.lock",
        "exit.json",
    }


def test_max_concurrent_counts_gpus_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSFER_LAB_MAX_RUNS", raising=False)
    for visible, expected in [("", 1), ("-1", 1), ("0,1", 2), ("2,-1,3", 1), ("GPU-a1b2,GPU-c3d4", 2)]:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert local.max_concurrent() == expected, visible
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "3")
    assert local.max_concurrent() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", bad)
        with pytest.raises(ValueError, match=f"TRANSFER_LAB_MAX_RUNS='{bad}'"):
            local.max_concurrent()


def test_submit_refuses_what_it_cannot_run(home: Path) -> None:
    with pytest.raises(ValueError, match="'train' is not of the form 'package.module:function'"):
        jobs.submit({}, target="train")
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        jobs.submit({"lr": float("nan")}, target=SLEEPY)
    with pytest.raises(jobs.RunNotFound, match="no run 'nope'"):
        jobs.status("nope")
    assert not (home / "runs").exists() or list((home / "runs").iterdir()) == []

    taken = jobs.submit({"seconds": 0.1}, run_id="mine", target=SLEEPY)
    with pytest.raises(ValueError, match="run 'mine' already exists"):
        jobs.submit({}, run_id=taken, target=SLEEPY)


def test_the_server_side_never_imports_torch() -> None:
    code = "import sys, core.jobs, core.jobs.queue, core.jobs.worker; print([m for m in sys.modules if 'torch' in m])"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_a_real_tiny_training_runs_end_to_end_through_the_queue(home: Path, tmp_path: Path) -> None:
    plan = {**TINY_TRAINING, "data": str(colour_folders(tmp_path / "colours"))}

    run_id = jobs.submit(plan)
    final = wait_for_state(run_id, "done", timeout_s=120)

    assert final.message == ""
    directory = run_dir(run_id)
    assert (directory / "model" / "model.pt2").is_file()
    assert {"batch", "epoch", "done"} <= set(event_types(run_id))
    row = jobs.list_runs()[0]
    assert (row.backbone, row.case) == ("mobilenet_v3_small", 4)
    assert 0.0 <= row.best_val_accuracy <= 1.0


def test_a_relative_data_path_is_made_absolute_at_submission(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    run_id = jobs.submit({"data": "photos", "seconds": 0.1}, target=SLEEPY)
    wait_for_state(run_id, "done")
    assert Run.open(run_id).plan_fields()["data"] == str(tmp_path / "photos")  # the worker runs elsewhere


def test_a_side_job_cancelled_before_its_worker_starts_never_runs(home: Path) -> None:
    """Cancel right after Start: no pid to signal yet, so the worker itself must see the request.
    Status is only read, never reconciled, so the grace period's kill cannot stand in for it."""
    from core.jobs import kinds

    run_id = jobs.submit({}, kinds.ANALYSE, target=FOREVER)
    jobs.cancel(run_id)
    ended = wait_until(lambda: (s := jobs.status(run_id)).state.final and s, "the worker ends it", 60)
    assert ended.state is RunState.CANCELLED
    assert "batch" not in event_types(run_id)  # its target never ran
