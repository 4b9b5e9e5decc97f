"""The run handle and its keeper: ids, states, the record, and stored plans across versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import storage
from core.cli import main
from core.data.samples import sample_path
from core.jobs.kinds import TRAIN, VALIDATE
from core.jobs.run import (
    RUN_ID,
    Run,
    RunNotFound,
    RunRecord,
    RunState,
    StatusKeeper,
    new_run_id,
    note_provenance,
)
from core.training.events import Tracked
from core.training.plan import PLAN_SCHEMA, Plan, PlanError

FIXTURE_PLAN = Path(__file__).resolve().parent / "fixtures" / "runs" / "20261129-120000-f1x7" / "plan.json"


def test_every_id_the_app_makes_is_a_valid_id() -> None:
    assert all(RUN_ID.fullmatch(new_run_id()) for _ in range(20))


@pytest.mark.parametrize("run_id", ["x" * 300, "../etc", ".hidden", "a/b", "", "[click](http://evil)"])
def test_an_id_no_run_can_have_is_simply_not_found(run_id: str) -> None:
    with pytest.raises(RunNotFound, match="no run") as refused:
        Run.open(run_id)
    assert len(str(refused.value)) < 120  # a crafted id is not echoed at length


def test_states_say_whether_a_process_still_answers_for_the_run() -> None:
    assert [s for s in RunState if s.active] == [RunState.QUEUED, RunState.RUNNING]
    assert RunState("done").final and json.dumps({"state": RunState.DONE}) == '{"state": "done"}'


def test_one_keeper_at_a_time_and_it_writes_status_and_events(lab_home: Path) -> None:
    run = Run(storage.runs_dir() / new_run_id())
    run.directory.mkdir(parents=True)
    with StatusKeeper.take(run) as keeper:
        assert StatusKeeper.take(run) is None  # the lock is held
        keeper.set_state(RunState.QUEUED, submitted=1.0)
        keeper.set_state(RunState.FAILED, "boom")
    assert StatusKeeper.take(run) is not None  # released on exit
    assert run.status().state == "failed" and run.status().finished >= 1.0
    events = [json.loads(line)["type"] for line in run.events_file.read_text().splitlines()]
    assert events == ["status", "error", "status"]


def test_an_old_status_reads_as_a_record_keeping_what_a_newer_version_added(lab_home: Path) -> None:
    run = Run(storage.runs_dir() / "old")
    # As the first release wrote it, less its backend and kind, plus a field from a later version.
    storage.write_json(run.status_file, {"state": "running", "pid": 7, "submitted": 1.0, "gpu_memory": 0.5})
    status = run.status()
    assert status.state is RunState.RUNNING and status.state.active  # the stored string, as the enum
    assert (status.kind, status.backend, status.finished) == (TRAIN, "local", None)  # defaults
    with StatusKeeper.take(run) as keeper:
        keeper.set_state(RunState.DONE)
    stored = json.loads(run.status_file.read_text())
    assert stored["state"] == "done" and stored["gpu_memory"] == 0.5 and stored["pid"] == 7  # passed on
    assert stored["kind"] == "train"  # the kind by its name, as every version stored it


def test_a_record_keeps_what_a_newer_version_added_when_this_one_writes_to_it(lab_home: Path) -> None:
    run = Run(storage.runs_dir() / "newer")
    run.directory.mkdir(parents=True)
    newer = {"schema": 1, "owner": "ada", "kind": "validate", "labels_file": "labels.csv"}
    storage.write_json(run.record_file, newer)
    note_provenance(run, Tracked(tracker="mlflow", run_id="r1", url="http://mlflow/r1"))
    assert run.record().kind is VALIDATE and run.record().provenance["tracking"]["mlflow"]["run_id"] == "r1"
    stored = json.loads(run.record_file.read_text())
    assert (stored["labels_file"], stored["kind"], stored["owner"]) == ("labels.csv", "validate", "ada")


@pytest.mark.parametrize(
    ("content", "problem"),
    [('{"state": "exploded"}', "state 'exploded' is none of queued"), ('{"state": "do', "not valid JSON")],
)
def test_a_damaged_status_reads_as_the_damaged_state_saying_why(
    lab_home: Path, content: str, problem: str
) -> None:
    run = Run(storage.runs_dir() / "broken")
    run.directory.mkdir(parents=True)
    run.status_file.write_text(content)
    assert run.status().state is RunState.DAMAGED and problem in run.status().message


def test_a_status_never_written_reads_as_queued(lab_home: Path) -> None:
    assert Run(storage.runs_dir() / "new").status().state is RunState.QUEUED


def test_a_run_without_a_record_is_named_after_its_data(lab_home: Path) -> None:
    run = Run(storage.runs_dir() / "old")
    storage.write_json(run.plan_file, {"data": "/data/flowers.zip"})
    assert run.record() == RunRecord(dataset_name="flowers.zip")
    run.write_record(RunRecord(owner="ada", dataset_name="Flowers", created=5.0))
    assert run.record().owner == "ada" and json.loads(run.record_file.read_text())["schema"] == 1


def test_plans_say_their_schema_and_old_ones_are_migrated_on_read() -> None:
    stored = json.loads(FIXTURE_PLAN.read_text())
    assert "schema" not in stored  # written by the first release
    plan = Plan.from_stored(stored)
    assert (plan.backbone, plan.case, plan.lr) == ("squeezenet1_1", 4, 1e-7)
    assert plan.to_dict()["schema"] == PLAN_SCHEMA
    assert Plan.from_dict(plan.to_dict()) == plan


def test_a_plan_from_a_newer_version_keeps_what_this_one_understands() -> None:
    newer = {"schema": PLAN_SCHEMA, "backbone": "resnet18", "case": 3, "mixup": 0.2}
    assert Plan.from_stored(newer) == Plan(backbone="resnet18", case=3)
    with pytest.raises(PlanError, match="unknown plan field.*'mixup'"):
        Plan.from_dict(newer)  # typed by a person: a typo is named, not dropped


def test_train_out_under_runs_needs_a_name_the_app_can_list(capsys, lab_home: Path) -> None:
    bad = storage.runs_dir() / "my run!"
    assert (
        main(["train", str(sample_path("faces")), "--backbone", "efficientnet_lite0", "--out", str(bad)]) == 1
    )
    assert "must be named with letters, digits" in capsys.readouterr().err
    assert not bad.exists()


def test_train_out_naming_a_file_is_refused(capsys, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    out = str(tmp_path / "notes.txt")
    assert main(["train", str(sample_path("faces")), "--backbone", "efficientnet_lite0", "--out", out]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_training_run_writes_nothing_outside_the_home_folder(tmp_path: Path) -> None:
    """The one documented exception is TORCH_HOME, which fetch-weights fills on purpose."""
    import os
    import subprocess
    import sys

    places = {name: tmp_path / name for name in ("user", "tmp", "cwd", "torch")}
    for folder in places.values():
        folder.mkdir()
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(places["user"]), "TMPDIR": str(places["tmp"]), "TORCH_HOME": str(places["torch"]),
           "TRANSFER_LAB_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"):
        env.pop(key, None)
    # However short the run, its passes are converted to the inference runtimes, which write into
    # the user's home folder and the temp dir as they are imported unless told otherwise.
    train = ["train", str(sample_path("faces")), "--backbone", "efficientnet_lite0", "--epochs", "1",
             "--image-size", "32"]  # fmt: skip
    script = f"import core.models.runtime as r; r.MIN_SAVING_S = 0; from core.cli import main; exit(main({train!r}))"
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, cwd=places["cwd"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the features pass ran on torch" not in done.stderr  # a runtime did run
    assert {name: sorted(p.name for p in folder.iterdir()) for name, folder in places.items()} == {
        "user": [], "tmp": [], "cwd": [], "torch": []
    }  # fmt: skip
    assert (home / "runs").is_dir() and (home / "cache" / "torchinductor").is_dir()  # where they went
