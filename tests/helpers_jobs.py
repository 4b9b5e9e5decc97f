"""Small training targets for the tests of ``core.jobs``, and how those tests watch them.

The real worker process runs the targets. Each has the training entry point's signature,
``target(run_dir, emit)``, and reads its knobs from the run's ``plan.json``, as
``core.training.train.run`` does. ``wait_for`` and ``wait_until`` are how the tests wait for
what those workers do; ``kill_workers`` is how none is left behind (the ``home`` fixture);
``ray_head`` is a real Ray head for the tests of the Ray backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from core import jobs, storage
from core.jobs import queue
from core.storage import RunFiles, write_json
from core.training.events import BatchEnd, Emit, PhaseStarted, Progress, RunDone, read_events

SLEEPY = "tests.helpers_jobs:sleepy"
FOREVER = "tests.helpers_jobs:forever"
FAILING = "tests.helpers_jobs:failing"

# A real training small enough for a test: a small net from scratch, tiny images, one epoch.
TINY_TRAINING = {
    "backbone": "mobilenet_v3_small",
    "case": 4,
    "weights": "none",
    "epochs": 1,
    "batch_size": 4,
    "image_size": 32,
    "augment": "none",
    "device": "cpu",
}


def colour_folders(data: Path) -> Path:
    """A tiny real data set at ``data``: 8 shades each of red and blue, 40 px, a folder per class."""
    from PIL import Image

    for label, colour in {"red": (220, 30, 30), "blue": (30, 30, 220)}.items():
        (data / label).mkdir(parents=True)
        for i in range(8):
            shade = tuple(max(0, c - 9 * i) for c in colour)
            Image.new("RGB", (40, 40), shade).save(data / label / f"{i}.png")
    return data


# A real training on the bundled digits, small enough for two ranks to share: a frozen body's
# features, a head fitted in two epochs.
DIGITS_PLAN = {
    "backbone": "efficientnet_lite0",
    "case": 1,
    "epochs": 2,
    "image_size": 64,
    "batch_size": 16,
    "lr": 1e-2,
    "augment": "none",
}
DIGITS_PER_CLASS = 30


def digits_folder(root: Path, classes: str = "0123456789") -> Path:
    """The first ``DIGITS_PER_CLASS`` images of each digit of the bundled sample, as class folders."""
    from core.data.samples import sample_path

    with zipfile.ZipFile(sample_path("digits")) as archive:
        for name in sorted(archive.namelist()):
            if name.split("/")[0] in classes and int(name.split("/")[1].split(".")[0]) < DIGITS_PER_CLASS:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(archive.read(name))
    return root


def wait_for(condition: Callable[[], Any], timeout_s: float = 60.0, what: str = "the condition") -> Any:
    """``condition()``'s first truthy value, polled for up to ``timeout_s``; the test fails after."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout_s} s")


def wait_until(condition: Callable[[], Any], what: str = "the condition", timeout_s: float = 30.0) -> Any:
    """``wait_for`` with what is awaited named before the bound, as the tests of runs write it."""
    return wait_for(condition, timeout_s, what)


def wait_for_state(run_id: str, state: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The run's status once ``jobs.reconcile`` reports it in ``state``."""
    return wait_until(
        lambda: (s := jobs.reconcile(run_id)).state == state and s, f"{run_id} {state}", timeout_s
    )


def run_dir(run_id: str) -> Path:
    return storage.runs_dir() / run_id


def event_types(run_id: str) -> list[str]:
    """The run's events by type, a status event by the state it names."""
    return [e.type if e.type != "status" else e.state for e in read_events(run_dir(run_id))]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # The test process started the worker, so an ended one may linger as a zombie until reaped,
    # which may happen between the two looks.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_workers(home: Path) -> None:
    """No test leaves a worker behind, even one that failed half-way."""
    deadline = time.monotonic() + 5
    for run in home.glob("runs/*"):
        while queue.worker_alive(run) and time.monotonic() < deadline:
            pid = json.loads((run / "status.json").read_text()).get("pid")
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            time.sleep(0.05)


# The whole cluster on the loopback; no usage reports; runs may wait a day for resources, the
# wait docs/ray.md recommends setting on a head (Ray's default fails a job pending 15 minutes).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray then resolves "this node" to 127.0.0.1
    "RAY_JOB_START_TIMEOUT_SECONDS": "86400",
}


@contextmanager
def ray_head() -> Iterator[Any]:
    """A Ray head on 127.0.0.1 with 2 logical CPUs and one ``slot`` (a custom resource a
    one-slot cluster is made of), its dashboard (the Job Submission API) on a free port, at
    ``address_for_jobs``; shut down, and the environment put back, at the end."""
    from helpers_server import free_port  # here: workers import this module without tests/ on their path
    from ray.cluster_utils import Cluster

    saved = {name: os.environ.get(name) for name in RAY_ENV}
    os.environ.update(RAY_ENV)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "resources": {"slot": 1},
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(),
            "dashboard_agent_listen_port": free_port(),
            "runtime_env_agent_port": free_port(),
            "metrics_export_port": free_port(),
            "metrics_agent_port": free_port(),
            # A lost node is noticed in about two seconds rather than fifteen.
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4},
        },
    )
    cluster.address_for_jobs = f"http://{cluster.webui_url}"
    try:
        _wait_for_job_agent(cluster.address_for_jobs)
        yield cluster
    finally:
        cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _wait_for_job_agent(address: str) -> None:
    """The head takes jobs once its node's agent has registered: a trivial job tells."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + 60
    while True:
        try:
            client = JobSubmissionClient(address)
            job = client.submit_job(entrypoint="true")
            break
        except (RuntimeError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    wait_until(lambda: str(client.get_job_status(job)) == "SUCCEEDED", "the first job", timeout_s=60)


def ray_job(run_id: str, stop: bool = False) -> Any:
    """Ray's own record of a run's job (stopped first when asked)."""
    from ray.job_submission import JobSubmissionClient

    from core.jobs import ray_backend

    client = JobSubmissionClient(os.environ[ray_backend.ADDRESS_ENV])
    if stop:
        client.stop_job(run_id)
    return client.get_job_info(run_id)


def sleepy(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Trains for ``plan["seconds"]``, a batch every 0.1 s, and scores ``plan["accuracy"]``."""
    plan = json.loads(RunFiles(Path(run_dir)).plan_file.read_text())
    steps = max(1, round(plan.get("seconds", 0.3) / 0.1))
    for step in range(1, steps + 1):
        time.sleep(0.1)
        emit(BatchEnd(epoch=1, step=step, steps=steps, loss=1.0 / step, images_per_s=100.0))
    metrics = {"val_accuracy": plan.get("accuracy", 0.5), "best_val_accuracy": plan.get("accuracy", 0.5)}
    write_json(RunFiles(Path(run_dir)).metrics_file, metrics)
    emit(RunDone(best_val_accuracy=metrics["best_val_accuracy"]))
    return metrics


def failing(run_dir: Path, emit: Emit) -> dict[str, Any]:
    print("loading the data set", flush=True)
    raise ValueError("learning rate 'fast' is not a number;\nexpected a float")


def forever(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Never finishes on its own, saying so in its log as it goes."""
    step = 0
    while True:
        step += 1
        print(f"still training, step {step}", flush=True)
        emit(BatchEnd(epoch=1, step=step, steps=10**6, loss=1.0, images_per_s=100.0))
        time.sleep(0.05)


def stubborn(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Ignores SIGTERM, as a worker stuck in a long native call would."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return forever(run_dir, emit)


def embedding(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Stays in a frozen case's feature pass, a quarter done, as a long one does."""
    emit(PhaseStarted(phase="features"))
    emit(Progress(phase="features", done=50, total=200, images_per_s=25.0))
    while True:
        time.sleep(0.05)


def alarm_default(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Gives SIGALRM its default action back, killing the process, as a native library that
    installs its own handlers may; then trains forever."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    return forever(run_dir, emit)


def greedy(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Runs out of memory, as a run too big for its machine does: its address space is capped
    at what it uses now plus a little, then it asks for far more."""
    import resource

    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 64 * 2**20, resource.RLIM_INFINITY))
    emit(BatchEnd(epoch=1, step=1, steps=2, loss=1.0, images_per_s=100.0))
    hoard = bytearray(2**32)
    return {"size": len(hoard)}


def lingering(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Finishes at once, but its process ends only once ``run_dir/let_go`` exists, as a process
    that loaded torch can take seconds to end on a busy machine."""
    import atexit

    def linger() -> None:
        deadline = time.monotonic() + 120
        while not (Path(run_dir) / "let_go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    atexit.register(linger)
    return {}


def vanishing(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Ends its process on the spot with code 3, as a native library's ``exit()`` does."""
    print("calling the native library", flush=True)
    os._exit(3)
