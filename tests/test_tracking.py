"""The team's trackers: a run trained with the CLI is mirrored to a real MLflow server (started
here on 127.0.0.1, read back through MLflow's client) and to TensorBoard event files (read back
with TensorBoard's reader); a tracker that is down costs a warning, never the run."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_jobs import DIGITS_PLAN, digits_folder, wait_for_state
from helpers_pages import open_page
from helpers_server import free_port, module_server

from core import jobs, storage
from core.cli import main
from core.jobs.run import Run, RunState
from core.tracking import Mirror, Outcome, TrackedRun, Tracking, mirrored
from core.training.events import EpochEnd, Event, RunWarning, StatusChanged, Tracked, read_events

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One storage home for the module's runs (the per-test home is function-scoped)."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("home")
        patch.setenv(storage.HOME_ENV, str(folder))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield folder


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 with its own store, for every test here: it
    takes a while to start."""
    folder = tmp_path_factory.mktemp("mlflow")
    with module_server(
        [
            *("mlflow", "server", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"),
            *("--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"),
            *("--artifacts-destination", str(folder / "artifacts")),
        ],
        folder,
        health_path="/health",
        timeout=180,
        # Its job runner (a few more processes, for GenAI evaluations) is nothing a run logs to.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    ) as url:
        yield url


def train(data: Path, out: Path, *options: str) -> SimpleNamespace:
    """A tiny case-1 run through the CLI, as a user starts it."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(
            [
                *("train", str(data), "--backbone", "efficientnet_lite0", "--case", "1"),
                *("--epochs", "2", "--image-size", "64", "--augment", "none", "--device", "cpu"),
                *("--out", str(out), *options),
            ]
        )
    assert code == 0, err.getvalue()
    run = Run(out)
    return SimpleNamespace(run=run, metrics=run.metrics(), events=read_events(out), stderr=err.getvalue())


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_folder(tmp_path_factory.mktemp("digits"), classes="0123")


@pytest.fixture(scope="module")
def tracked(
    module_home: Path, digits: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> SimpleNamespace:
    """One run mirrored to the MLflow server and to TensorBoard files, and MLflow's record of it."""
    from mlflow import MlflowClient

    board = tmp_path_factory.mktemp("tensorboard")
    trained = train(
        digits, module_home / "runs" / "tracked", "--mlflow", mlflow_server, "--tensorboard", str(board)
    )
    client = MlflowClient(tracking_uri=mlflow_server)
    (found,) = client.search_runs(
        [client.get_experiment_by_name("transfer-lab").experiment_id], "attributes.run_name = 'tracked'"
    )
    return SimpleNamespace(**vars(trained), client=client, mlflow=found, board=board, url=mlflow_server)


def test_the_mlflow_run_holds_the_plan_as_parameters_and_finds_again_by_tags(
    tracked: SimpleNamespace,
) -> None:
    data = tracked.mlflow.data
    plan = tracked.run.plan_fields()
    assert data.params["backbone"] == "efficientnet_lite0"
    assert data.params["epochs"] == "2" and data.params["case"] == "1"
    assert data.params["data"] == plan["data"]
    assert data.tags["case"] == "1" and data.tags["backbone"] == "efficientnet_lite0"
    assert data.tags["owner"] == "local"
    assert data.tags["data_sha256"] == tracked.run.record().provenance["dataset_sha256"]
    assert tracked.mlflow.info.status == "FINISHED"


def test_each_epoch_is_a_step_of_the_mlflow_metric_history(tracked: SimpleNamespace) -> None:
    history = tracked.metrics["history"]
    for key in ("train_loss", "val_accuracy", "val_loss"):
        logged = tracked.client.get_metric_history(tracked.mlflow.info.run_id, key)
        assert [(m.step, m.value) for m in logged] == [(e["epoch"], pytest.approx(e[key])) for e in history]


def test_the_final_metrics_are_the_kept_models(tracked: SimpleNamespace) -> None:
    logged, metrics = tracked.mlflow.data.metrics, tracked.metrics
    assert logged["best_val_accuracy"] == pytest.approx(metrics["best_val_accuracy"])
    assert logged["best_epoch"] == metrics["best_epoch"]
    assert logged["majority_rate"] == pytest.approx(metrics["majority_rate"])


def test_the_model_folder_and_the_results_are_artifacts(tracked: SimpleNamespace) -> None:
    run_id, client = tracked.mlflow.info.run_id, tracked.client
    top = {Path(a.path).name for a in client.list_artifacts(run_id)}
    model = {Path(a.path).name for a in client.list_artifacts(run_id, "model")}
    assert {"model", "metrics.json", "plan.json"} <= top
    assert {"model.pt2", "labels.json", "preprocess.json", "README.md"} <= model
    assert model >= {p.name for p in tracked.run.model_dir.iterdir()}  # the card too, where there is one


def test_the_run_record_and_the_cli_say_where_the_run_was_mirrored(tracked: SimpleNamespace) -> None:
    where = tracked.run.record().provenance["tracking"]
    run_id = tracked.mlflow.info.run_id
    assert where["mlflow"]["run_id"] == run_id
    assert where["mlflow"]["url"].startswith(tracked.url) and where["mlflow"]["url"].endswith(run_id)
    assert Path(where["tensorboard"]["url"]) == (tracked.board / "tracked").resolve()
    assert f"mirrored to mlflow: {where['mlflow']['url']}" in tracked.stderr


def test_tensorboard_files_hold_each_epochs_scalars(tracked: SimpleNamespace) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked.board / "tracked"))
    events.Reload()
    history = tracked.metrics["history"]
    for key in ("train_loss", "val_accuracy"):
        scalars = [(s.step, s.value) for s in events.Scalars(key)]
        assert scalars == [(e["epoch"], pytest.approx(e[key], rel=1e-5)) for e in history]
    (best,) = events.Scalars("best_val_accuracy")
    assert best.value == pytest.approx(tracked.metrics["best_val_accuracy"], rel=1e-5)


def test_a_tracker_that_is_down_costs_a_warning_not_the_run(tmp_path: Path, digits: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    trained = train(digits, tmp_path / "untracked", "--mlflow", closed)
    (running,) = [e for e in trained.events if isinstance(e, StatusChanged) and e.state == "running"]
    (warning,) = [e for e in trained.events if isinstance(e, RunWarning) and e.message.startswith("MLflow")]
    assert warning.message.startswith("MLflow stopped recording this run")
    assert warning.time - running.time < 60  # MLflow's own retries would take minutes
    assert trained.run.status().state is RunState.DONE and trained.metrics is not None
    assert "tracking" not in trained.run.record().provenance
    assert "warning: MLflow stopped recording this run" in trained.stderr


def test_a_submitted_run_is_mirrored_by_its_worker_not_by_flags(digits: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", str(digits), "--submit", "--mlflow", "http://127.0.0.1:1"])
    assert code == 1
    assert "MLFLOW_TRACKING_URI" in err.getvalue()


def test_results_links_a_mirrored_run_to_its_mlflow_page(tracked: SimpleNamespace, lab_home: Path) -> None:
    shutil.copytree(tracked.run.directory, lab_home / "runs" / tracked.run.id)
    at = open_page("pages/results.py", run=tracked.run.id)
    assert not at.exception
    (link,) = at.get("link_button")
    assert link.proto.label == "Open in MLflow"
    assert link.proto.url == tracked.run.record().provenance["tracking"]["mlflow"]["url"]


def test_a_run_from_the_app_is_mirrored_by_its_worker(
    home: Path, digits: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", mlflow_server
    )  # the app's environment, which its workers inherit
    run_id = jobs.submit({**DIGITS_PLAN, "data": str(digits), "device": "cpu"}, owner="alice")
    wait_for_state(run_id, "done", timeout_s=600)
    where = Run.open(run_id).record().provenance["tracking"]["mlflow"]
    mirrored = MlflowClient(tracking_uri=mlflow_server).get_run(where["run_id"])
    assert mirrored.info.status == "FINISHED" and mirrored.info.run_name == run_id
    assert mirrored.data.tags["owner"] == "alice"
    assert mirrored.data.metrics["best_val_accuracy"] == pytest.approx(
        Run.open(run_id).metrics()["best_val_accuracy"]
    )


class Refusing(Mirror):
    """A tracker that opens, then refuses the first epoch (a server that went away mid-run)."""

    title = "Refusing"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def start(self, run: TrackedRun) -> Tracked:
        return Tracked(tracker="refusing", run_id=run.name, url="")

    def observe(self, event: Event) -> None:
        self.asked.append(event.type)
        if isinstance(event, EpochEnd):
            raise ConnectionError("503 Service Unavailable")

    def finish(self, run: TrackedRun, outcome: Outcome) -> None:
        self.asked.append(outcome)


def test_a_tracker_that_fails_mid_run_warns_once_and_is_not_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = Refusing()
    monkeypatch.setattr(Tracking, "mirrors", lambda self: [refusing])
    written: list[Event] = []
    epochs = [EpochEnd(epoch=n, epochs=2, train_loss=1.0, train_accuracy=0.5, val_loss=1.0,
                       val_accuracy=0.5, lr=0.1, seconds=1.0) for n in (1, 2)]  # fmt: skip
    with mirrored(Tracking(), TrackedRun(tmp_path / "run", "ann"), written.append) as emit:
        for epoch in epochs:
            emit(epoch)
    assert [e.type for e in written] == ["tracked", "epoch", "warning", "epoch"]
    assert (
        written[2].message == "Refusing stopped recording this run: ConnectionError: 503 Service Unavailable"
    )
    assert refusing.asked == ["epoch"]  # neither the second epoch nor the end


def test_a_tracker_that_never_answers_costs_seconds_not_minutes(tmp_path: Path) -> None:
    run = TrackedRun(tmp_path / "run", "ann")
    run.directory.mkdir()
    storage.write_json(run.files.plan_file, {"backbone": "resnet18", "case": 1})
    written: list[Event] = []
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections wait in its backlog, unanswered
        host, port = silent.getsockname()
        started = time.monotonic()
        with mirrored(Tracking(mlflow_uri=f"http://{host}:{port}"), run, written.append):
            pass
        waited = time.monotonic() - started
    assert [e.type for e in written] == ["warning"]
    assert written[0].message.startswith("MLflow stopped recording this run")
    assert waited < 60  # MLflow's defaults: 120 s a request, 7 retries
