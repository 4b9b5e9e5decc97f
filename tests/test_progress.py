"""Events read back as the types they were written as, and one progress summary folded from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.training.events import (
    BatchEnd,
    EpochEnd,
    EventLog,
    PhaseStarted,
    Progress,
    RunDone,
    RunWarning,
    StatusChanged,
    UnknownEvent,
    parse_event,
    read_events,
)
from core.training.progress import RunProgress, duration


def epoch(n: int, at: float, seconds: float = 10.0, of: int = 3) -> EpochEnd:
    return EpochEnd(
        epoch=n, epochs=of, train_loss=1.0, train_accuracy=0.5, val_loss=1.0, val_accuracy=0.5,
        lr=1e-3, seconds=seconds, time=at,
    )  # fmt: skip


def test_events_read_back_as_the_dataclasses_they_were_written_as(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    written = [
        StatusChanged(state="running", time=1.0),
        Progress(phase="decoding", done=5, total=10, images_per_s=50.0, time=2.0),
        RunWarning(message="mind the gap", suggest="from_scratch", time=3.0),
        RunDone(best_val_accuracy=0.9, time=4.0),
    ]
    for event in written:
        log(event)
    assert read_events(tmp_path) == written


def test_reading_tolerates_old_and_future_runs(tmp_path: Path) -> None:
    lines = [
        {"type": "batch", "time": 1.0, "epoch": 1, "step": 1, "steps": 2, "loss": 0.5, "images_per_s": 9.0,
         "gpu_memory": 123},  # a field from a later version
        {"type": "hologram", "time": 2.0, "depth": 3},  # a type from a later version
        {"type": "epoch", "time": 3.0, "epoch": 1},  # fields missing: not understood, not fatal
    ]  # fmt: skip
    (tmp_path / "events.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{damaged\n")
    batch, future, partial, damaged = read_events(tmp_path)
    assert batch == BatchEnd(epoch=1, step=1, steps=2, loss=0.5, images_per_s=9.0, time=1.0)
    assert isinstance(future, UnknownEvent) and future.name == "hologram" and future.data["depth"] == 3
    assert isinstance(partial, UnknownEvent) and partial.name == "epoch"
    assert isinstance(damaged, UnknownEvent)
    assert RunProgress.of([batch, future, partial, damaged]).batch == batch


def test_the_phases_follow_a_run_from_queued_to_finished() -> None:
    progress = RunProgress(total_epochs=2)
    seen = [progress.phase]
    for event in (
        StatusChanged(state="running", time=1.0),
        PhaseStarted(phase="decoding", time=1.0),
        Progress(phase="decoding", done=10, total=10, images_per_s=100.0, time=1.1),
        PhaseStarted(phase="features", time=1.1),
        PhaseStarted(phase="training", time=2.0),
        BatchEnd(epoch=1, step=1, steps=1, loss=0.4, images_per_s=500.0, time=2.1),
        PhaseStarted(phase="exporting", time=3.0),
        StatusChanged(state="done", time=4.0),
    ):
        progress.update(event)
        seen.append(progress.phase)
    assert list(dict.fromkeys(seen)) == ["queued", "preparing", "decoding", "features", "training", "exporting", "finished"]  # fmt: skip


def test_time_left_while_decoding_is_the_images_left_at_the_rate() -> None:
    progress = RunProgress.of([Progress(phase="decoding", done=100, total=400, images_per_s=50.0, time=10.0)])
    assert progress.eta_s(now=10.0) == pytest.approx(6.0)
    assert progress.eta_s(now=12.0) == pytest.approx(4.0)  # the clock runs on between events
    assert progress.images_per_s == 50.0


def test_time_left_in_training_counts_this_epoch_and_the_rest() -> None:
    events = [
        PhaseStarted(phase="training", time=0.0),
        epoch(1, at=10.0),
        BatchEnd(epoch=2, step=5, steps=10, loss=0.5, images_per_s=100.0, time=15.0),
    ]
    progress = RunProgress.of(events, total_epochs=3)
    # half of epoch 2 left at 1 s a step, then epoch 3 at the 10 s epoch 1 took
    assert progress.eta_s(now=15.0) == pytest.approx(15.0)
    assert progress.epoch_fraction == 0.5
    first_epoch = RunProgress.of(events[:1] + events[2:3], total_epochs=3)
    assert first_epoch.eta_s(now=15.0) is not None  # from its own steps, before any epoch ended


def test_a_suggestion_travels_with_its_warning() -> None:
    progress = RunProgress.of([RunWarning(message="plain"), RunWarning(message="x", suggest="from_scratch")])
    assert progress.suggest == "from_scratch" and len(progress.warnings) == 2


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (None, 42, 210, 7200)] == ["-", "42 s", "3.5 min", "2.0 h"]


def test_an_unknown_type_keeps_its_data() -> None:
    event = parse_event({"type": "later", "time": 5, "x": [1, 2]})
    assert isinstance(event, UnknownEvent) and event.time == 5 and event.data["x"] == [1, 2]


def test_a_duration_is_never_zero_seconds() -> None:
    assert duration(0.2) == "under a second" and duration(0.6) == "1 s" and duration(None) == "-"


def test_a_queued_run_waits_for_the_runs_ahead_of_it() -> None:
    from core.training.progress import queue_wait

    assert queue_wait([120.0], ahead=2, typical_s=300.0) == 720.0  # the one training, two waiting
    assert queue_wait([120.0], ahead=0, typical_s=None) == 120.0  # next in line
    assert queue_wait([None], ahead=0, typical_s=300.0) is None  # the running one has no ETA yet
    assert queue_wait([], ahead=1, typical_s=None) is None
