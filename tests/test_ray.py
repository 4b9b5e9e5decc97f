"""The Ray jobs backend against a real Ray cluster on 127.0.0.1, started once for the session.

The head has 2 logical CPUs, so that a two-worker run shows it fits a two-CPU cluster, and one
``slot``, a custom resource a one-slot cluster is made of; a test that needs a node to kill adds one with a
resource of its own and pins its run there. Runs go through the app's jobs API, as the pages
send them, and the worker in Ray mode keeps the same run directory as a local worker does.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_jobs import (
    DIGITS_PLAN,
    FOREVER,
    SLEEPY,
    digits_folder,
    event_types,
    ray_job,
    run_dir,
    wait_for_state,
    wait_until,
)
from helpers_server import free_port
from PIL import Image

from core import jobs
from core.jobs import backend, ray_backend
from core.jobs.run import Run
from core.storage import write_json
from core.training.events import read_events

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


def colours(folder: Path) -> Path:
    """Sixteen tiny images of two colours: a real training run in seconds."""
    for label, colour in {"red": (220, 30, 30), "blue": (30, 30, 220)}.items():
        (folder / label).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (40, 40), tuple(max(0, c - 9 * i) for c in colour)).save(
                folder / label / f"{i}.png"
            )
    return folder


TINY_CASE_4 = {"backbone": "mobilenet_v3_small", "case": 4, "weights": "none", "epochs": 1, "batch_size": 4,
               "image_size": 32, "augment": "none", "device": "cpu"}  # fmt: skip


def contents(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*")}


def test_a_run_on_ray_trains_and_leaves_the_run_directory_a_local_run_leaves(
    on_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = TINY_CASE_4 | {"data": str(colours(tmp_path / "colours"))}

    on_cluster = jobs.submit(plan)
    final = wait_for_state(on_cluster, "done", timeout_s=120)
    monkeypatch.setenv(backend.BACKEND_ENV, "local")
    here = jobs.submit(plan)
    wait_for_state(here, "done", timeout_s=120)

    assert (final.backend, final.address) == ("ray", on_ray.address_for_jobs)
    assert final.host == platform.node() and final.message == ""
    wait_until(lambda: str(ray_job(on_cluster).status) == "SUCCEEDED", "Ray's job succeeded", timeout_s=15)
    assert contents(run_dir(on_cluster)) == contents(run_dir(here))
    assert Run.open(on_cluster).record().backend == "ray" and Run.open(here).record().backend == "local"
    assert set(Run.open(on_cluster).metrics()) == set(Run.open(here).metrics())
    assert {"batch", "epoch", "done"} <= set(event_types(on_cluster))
    assert jobs.list_runs()[1].run_id == on_cluster


def test_a_run_whose_node_dies_is_failed_with_rays_reason(
    on_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = on_ray.add_node(num_cpus=1, resources={"doomed": 1})
    monkeypatch.setenv(ray_backend.RESOURCES_ENV, json.dumps({"doomed": 1}))
    run_id = jobs.submit({}, target=FOREVER)
    wait_for_state(run_id, "running", timeout_s=60)
    assert ray_job(run_id).driver_node_id == doomed.node_id

    on_ray.remove_node(doomed, allow_graceful=False)
    final = wait_for_state(run_id, "failed", timeout_s=90)

    assert final.message.startswith("Ray reports the job failed: ")
    assert event_types(run_id)[-2:] == ["error", "failed"]


def test_two_runs_on_a_one_slot_cluster_wait_their_turn_and_both_finish(
    on_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ray_backend.RESOURCES_ENV, json.dumps({"slot": 1}))
    first = jobs.submit({"seconds": 2.0}, target=SLEEPY)
    wait_for_state(first, "running", timeout_s=60)
    second = jobs.submit({"seconds": 0.2}, target=SLEEPY)
    third = jobs.submit({"seconds": 0.2}, target=SLEEPY)

    assert jobs.status(second).message == "waiting for cluster resources"
    assert (
        jobs.status(third).message == "waiting for cluster resources; 1 earlier run of this app still waits"
    )
    assert jobs.status(third).queue_position is None
    finals = [wait_for_state(run_id, "done", timeout_s=60) for run_id in (first, second, third)]
    spans = sorted((f.started, f.finished) for f in finals)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))


def test_a_run_ray_has_no_job_for_cancels_quietly_and_fails_saying_the_cluster_lost_it(on_ray: Any) -> None:
    run_id = "20260101-000000-lost"  # as after a restart of the cluster: the run says Ray, Ray knows nothing
    address = on_ray.address_for_jobs
    write_json(
        run_dir(run_id) / "status.json",
        {
            "state": "queued",
            "message": "",
            "submitted": time.time() - 60,
            "backend": "ray",
            "address": address,
        },
    )

    jobs.cancel(run_id)

    final = jobs.status(run_id)
    assert (final.state, final.message) == (
        "failed",
        f"Ray at {address} has no job {run_id} (was the cluster restarted?)",
    )


def test_a_node_with_other_versions_refuses_the_run_in_one_line(
    on_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ray_backend.versions()
    monkeypatch.setattr(ray_backend, "versions", lambda: real | {"torch": "1.0.0"})  # the server's side

    run_id = jobs.submit({"seconds": 0.1}, target=SLEEPY)
    final = wait_for_state(run_id, "failed", timeout_s=60)

    assert final.message == (
        f"versions differ on node {platform.node()}: torch {real['torch']} here, 1.0.0 on the app server; "
        "install the same Transfer Lab, torch and Ray on every node"
    )
    assert "batch" not in event_types(run_id)


def test_ray_trains_the_rank_detection_reads_ray_trains_ranks(on_ray: Any, tmp_path: Path) -> None:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(on_ray.address_for_jobs)
    job = client.submit_job(
        entrypoint=f"{sys.executable} -m tests.helpers_ray {tmp_path}",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        entrypoint_num_cpus=0,
    )
    # Ray Train starts two workers that import torch: 37 s beside other work, over 120 s beside
    # two CPU burners on 2 cores. The bound only decides when a hung job fails.
    wait_until(lambda: client.get_job_status(job).is_terminal(), "the ranks job", timeout_s=360)

    assert str(client.get_job_status(job)) == "SUCCEEDED", client.get_job_logs(job)[-2000:]
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["ours"] for s in seen] == [s["ray"] for s in seen] == [[0, 0, 2], [1, 1, 2]]


def test_a_two_worker_run_trains_under_torchtrainer_with_the_metrics_of_one(
    on_ray: Any, tmp_path: Path, finished_run: Path
) -> None:
    plan = DIGITS_PLAN | {
        "data": str(digits_folder(tmp_path / "digits", classes="0123")),
        "workers": 2,
        "device": "cpu",
    }
    run_id = jobs.submit(plan)
    # 180 s beside two CPU burners on 2 cores, over 240 s with more load: the bound is generous.
    final = wait_for_state(run_id, "done", timeout_s=480)

    assert final.message == ""
    assert set(Run.open(run_id).metrics()) == set(json.loads((finished_run / "metrics.json").read_text()))
    assert Run.open(run_id).metrics()["best_val_accuracy"] > 0.5  # chance: 0.25
    events = read_events(run_dir(run_id))
    epochs = [e.epoch for e in events if e.type == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1)) and epochs  # one stream: rank 0's
    data = next(e for e in events if e.type == "data")
    embedded = [e.total for e in events if e.type == "progress" and e.phase == "features"]
    assert set(embedded) == {data.train // 2 + data.val}  # rank 0 embedded its half of the training images
    assert Run.open(run_id).record().provenance["dataset_sha256"] == data.sha256
    assert (run_dir(run_id) / "model" / "model.pt2").is_file()
    assert (run_dir(run_id) / "ray").is_dir()  # Ray Train's own storage stays in the run


def test_the_ray_backend_is_refused_in_one_line_when_misconfigured(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(backend.BACKEND_ENV, "slurm")
    with pytest.raises(backend.BackendError, match="^TRANSFER_LAB_BACKEND='slurm': expected 'local'"):
        jobs.submit({}, target=SLEEPY)
    monkeypatch.setenv(backend.BACKEND_ENV, "ray")
    monkeypatch.delenv(ray_backend.ADDRESS_ENV, raising=False)
    with pytest.raises(backend.BackendError, match="needs RAY_ADDRESS, the Ray dashboard's address"):
        jobs.submit({}, target=SLEEPY)
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, "127.0.0.1:6379")
    with pytest.raises(
        backend.BackendError, match="give the Ray dashboard's address, such as http://HEAD:8265"
    ):
        jobs.submit({}, target=SLEEPY)
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, f"http://127.0.0.1:{free_port()}")  # nobody there
    with pytest.raises(backend.BackendError, match="^no Ray cluster answers at http://127.0.0.1:"):
        jobs.submit({}, target=SLEEPY)
    assert [(row.state, row.message[:24]) for row in jobs.list_runs()] == [
        ("failed", "no Ray cluster answers a")
    ]


def test_without_ray_installed_choosing_it_names_the_install_command(lab_home: Path) -> None:
    """The interpreter the venv was made from has none of its packages: Ray is not there."""
    code = "from core import jobs; jobs.submit({}, target='tests.helpers_jobs:sleepy')"
    env = {
        **os.environ,
        "TRANSFER_LAB_BACKEND": "ray",
        "RAY_ADDRESS": "127.0.0.1:8265",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys._base_executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr.strip().splitlines()[-1] == (
        "core.jobs.backend.BackendError: TRANSFER_LAB_BACKEND=ray needs Ray, which is not installed here: "
        "pip install -r requirements-ray.txt"
    )


def test_train_submit_sends_the_plan_through_ray_and_follows_its_events(on_ray: Any, tmp_path: Path) -> None:
    data = colours(tmp_path / "colours")
    tiny = ["--backbone", "mobilenet_v3_small", "--case", "4", "--weights", "none", "--epochs", "1",
            "--batch-size", "4", "--image-size", "32", "--augment", "none", "--device", "cpu"]  # fmt: skip

    done = subprocess.run(
        [sys.executable, "-m", "core", "train", str(data), *tiny, "--submit", "--json"],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-2000:]
    run_id = done.stderr.split("submitted run ")[1].split()[0]
    assert f"submitted run {run_id} (ray)" in done.stderr
    assert "epoch 1/1: train loss" in done.stderr  # drawn from the run's events as they came
    assert json.loads(done.stdout) == Run.open(run_id).metrics()
    wait_until(lambda: str(ray_job(run_id).status) == "SUCCEEDED", "Ray's job succeeded", timeout_s=15)


def test_train_refuses_several_workers_in_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "core", "train", str(colours(tmp_path / "c")), "--weights", "none", "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "python -m core train: --workers 2 needs --submit (or run every process under torchrun)"
    )


@pytest.fixture
def shared_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home every uid may enter and write, as a volume shared by a team's machines is made
    (pytest's own temp folders are private), with a umask that keeps new folders writable."""
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="transfer-lab-shared-"))
    home.chmod(0o777)
    monkeypatch.setenv("TRANSFER_LAB_HOME", str(home))
    umask = os.umask(0)
    try:
        yield home
    finally:
        os.umask(umask)
        shutil.rmtree(home)


NOBODY = 65534
SETPRIV = "/usr/bin/setpriv"


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SETPRIV).exists(), reason="needs root and setpriv to switch uid"
)
def test_a_run_written_by_a_worker_under_another_uid_is_readable_by_the_app(
    on_ray: Any, shared_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker runs as nobody (allowed to read the interpreter under /root, nothing more); the
    # app reads as root stripped of every capability, so that only the files' modes let it in.
    worker = f"{SETPRIV} --reuid={NOBODY} --regid={NOBODY} --clear-groups --inh-caps=+dac_read_search "
    monkeypatch.setenv(ray_backend.PYTHON_ENV, worker + f"--ambient-caps=+dac_read_search {sys.executable}")
    run_id = jobs.submit({"seconds": 0.3, "accuracy": 0.6}, target=SLEEPY)
    wait_for_state(run_id, "done", timeout_s=60)
    assert (run_dir(run_id) / "metrics.json").stat().st_uid == NOBODY

    code = (
        "import json, sys; from core import jobs; from core.training.events import read_events; "
        f"run = jobs.Run.open({run_id!r}); "
        "print(json.dumps([run.status().state, run.metrics()['best_val_accuracy'], run.record().backend, "
        "[e.type for e in read_events(run.directory)][-2:]]))"
    )
    app = [SETPRIV, "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", code]
    done = subprocess.run(app, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-1500:]
    assert json.loads(done.stdout) == ["done", 0.6, "ray", ["done", "status"]]


def test_the_estimate_is_a_short_ray_job_under_ray(on_ray: Any, tmp_path: Path) -> None:
    from core.jobs.estimate import estimate
    from core.jobs.kinds import ESTIMATE

    plan = TINY_CASE_4 | {"data": str(colours(tmp_path / "colours")), "epochs": 3}
    guess = estimate(plan)

    assert (guess.device, guess.epochs, guess.train_images + guess.val_images) == ("cpu", 3, 16)
    assert 0 < guess.epoch_s < guess.total_s
    jobs_run = jobs.list_runs(ESTIMATE)
    assert [(row.state, jobs.status(row.run_id).backend) for row in jobs_run] == [("done", "ray")]
    assert jobs.list_runs() == []  # the runs table lists training alone
    wait_until(lambda: str(ray_job(jobs_run[0].run_id).status) == "SUCCEEDED", "Ray's job", timeout_s=15)


def test_versions_compare_without_a_torch_builds_flavour_and_with_a_commit_both_sides_know() -> None:
    same = ray_backend._same_version
    assert same("torch", "2.14.1+cpu", "2.14.1+cu130")  # a CPU web server, GPU nodes
    assert not same("torch", "2.14.1", "2.13.0")
    assert not same("ray", "2.60.0", None)
    assert same("transfer-lab", "0.1.0", "0.1.0+3fa2b1c")  # an installed copy, or git out of reach
    assert not same("transfer-lab", "0.1.0+3fa2b1c", "0.1.0+9e8d7c6")
