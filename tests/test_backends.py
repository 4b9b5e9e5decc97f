"""What every jobs backend promises, tested on each: the local workers, and a real Ray cluster
on 127.0.0.1 (``-m "not ray"`` leaves that one out).

The same small targets run through the app's jobs API on both, so a user sees the same states,
messages and events whichever backend runs their jobs. What only one backend does (the local
queue's slots, Ray's placement and lost nodes) is tested in ``test_jobs`` and ``test_ray``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_jobs import (
    FAILING,
    FOREVER,
    SLEEPY,
    event_types,
    process_gone,
    run_dir,
    wait_for_state,
    wait_until,
)

from core import jobs
from core.jobs import backend, kinds
from core.jobs.run import CANCELLED_MESSAGE
from core.training.events import EventReader, read_events

# Bounds for a busy machine, where a Ray job's worker takes seconds to start.
START_S = 60.0
END_S = 30.0


@pytest.fixture(params=[backend.LOCAL, pytest.param(backend.RAY, marks=pytest.mark.ray)])
def jobs_on(request: pytest.FixtureRequest, lab_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This test's jobs go to one backend, one run at a time, no GPU; none is left running after."""
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    if request.param == backend.RAY:
        request.getfixturevalue("on_ray")
    else:
        monkeypatch.setenv(backend.BACKEND_ENV, backend.LOCAL)
    yield request.param
    for run_id in [row.run_id for row in jobs.active_runs()]:
        jobs.cancel(run_id)
        wait_until(lambda run_id=run_id: not jobs.reconcile(run_id).state.active, "its end")


def test_a_run_trains_in_its_worker_and_ends_done(jobs_on: str) -> None:
    run_id = jobs.submit({"seconds": 0.2, "accuracy": 0.75}, target=SLEEPY)

    final = wait_for_state(run_id, "done", timeout_s=START_S)

    assert final.backend == jobs_on and final.pid != os.getpid()
    assert final.submitted <= final.started <= final.finished
    assert final.message == "" and final.queue_position is None
    assert event_types(run_id) == ["queued", "running", "batch", "batch", "done", "done"]
    assert jobs.list_runs()[0].best_val_accuracy == 0.75


def test_progress_arrives_while_a_run_runs_and_a_restart_leaves_it_alone(jobs_on: str) -> None:
    run_id = jobs.submit({"seconds": 3.0, "accuracy": 0.8}, target=SLEEPY)
    reader = EventReader(run_dir(run_id))

    seen = wait_until(
        lambda: (
            jobs.reconcile(run_id).state == "running"
            and [e for e in reader.new_events() if e.type == "batch"]
        ),
        "a batch event while running",
        timeout_s=START_S,
    )

    assert jobs.status(run_id).state == "running" and seen[0].step >= 1
    assert jobs.recover() == []  # an app restarting leaves a run whose worker lives alone
    assert wait_for_state(run_id, "done", timeout_s=END_S).heartbeat
    assert jobs.list_runs()[0].best_val_accuracy == 0.8


def test_a_failing_run_records_a_one_line_message_and_the_traceback(jobs_on: str) -> None:
    run_id = jobs.submit({}, target=FAILING)

    final = wait_for_state(run_id, "failed", timeout_s=START_S)

    assert final.message == "ValueError: learning rate 'fast' is not a number; expected a float"
    log = (run_dir(run_id) / "worker.log").read_text()
    assert "Traceback" in log and "helpers_jobs.py" in log
    errors = [e for e in read_events(run_dir(run_id)) if e.type == "error"]
    assert [e.message for e in errors] == [final.message]


def test_cancel_stops_a_running_run_within_seconds(jobs_on: str) -> None:
    run_id = jobs.submit({}, target=FOREVER)
    pid = wait_for_state(run_id, "running", timeout_s=START_S).pid

    jobs.cancel(run_id)
    final = wait_for_state(run_id, "cancelled", timeout_s=15)

    assert final.message == CANCELLED_MESSAGE
    assert event_types(run_id)[-1] == "cancelled"
    wait_until(lambda: process_gone(pid), "the worker's exit", timeout_s=15)


def test_a_frozen_worker_is_stopped_and_failed_by_its_heartbeat(
    jobs_on: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = jobs.submit({}, target=FOREVER)
    pid = wait_for_state(run_id, "running", timeout_s=START_S).pid

    os.kill(pid, signal.SIGSTOP)  # the same machine here: on a cluster, any node
    monkeypatch.setattr(backend, "HEARTBEAT_TIMEOUT_S", 1.0)
    final = wait_for_state(run_id, "failed", timeout_s=END_S)

    assert "stopped responding (no heartbeat for " in final.message
    wait_until(lambda: process_gone(pid), "the frozen worker stopped", timeout_s=15)


def test_a_job_past_its_time_limit_is_failed_saying_so(jobs_on: str) -> None:
    run_id = jobs.submit({}, kinds.ANALYSE, target=FOREVER, time_limit_s=2.0)

    final = wait_for_state(run_id, "failed", timeout_s=START_S)

    assert final.message == "stopped after 2 s, the time limit for this job"
    assert "batch" in event_types(run_id) and event_types(run_id)[-1] == "failed"  # it ran, then was stopped
