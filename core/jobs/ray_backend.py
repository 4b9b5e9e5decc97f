"""Runs as Ray jobs: the jobs backend for a team whose GPUs sit in several machines.

Each job is submitted through Ray's Job Submission API, ``submission_id`` being the run id, and
its entrypoint is the same worker as on the local backend, started with ``--ray``: it skips the
local queue (placing work is Ray's job), keeps ``status.json`` (heartbeat, final state) in the
run directory, which lives on storage every node reaches, and checks first that its node runs
the versions of Transfer Lab, torch and Ray that submitted it. The entrypoint reserves the run's
resources: one GPU when the cluster has GPUs, else ``TRANSFER_LAB_RAY_CPUS`` CPUs, plus the
custom resources of ``TRANSFER_LAB_RAY_RESOURCES`` (a JSON object), which pin jobs to nodes.

Liveness comes from Ray's job status and the heartbeat, never from ``worker.lock`` or a pid,
which mean nothing across hosts: here ``worker.lock`` is only the mutex of this server's
readers, so that one of them records a run's end. Ray is imported only in the functions that
talk to it: the web server imports this package whatever its backend.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core import jobs, storage
from core.errors import one_line
from core.jobs import queue
from core.jobs.backend import RAY, BackendError, of_run
from core.jobs.run import (
    CANCELLED_MESSAGE,
    Run,
    RunState,
    StatusKeeper,
    all_runs,
    app_version,
    installed,
    state_of,
)

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

CPUS_ENV = "TRANSFER_LAB_RAY_CPUS"
RESOURCES_ENV = "TRANSFER_LAB_RAY_RESOURCES"
# The interpreter on the nodes (a command: it may start with a wrapper), when not this server's.
PYTHON_ENV = "TRANSFER_LAB_RAY_PYTHON"
VERSIONS_ENV = "TRANSFER_LAB_VERSIONS"  # what the submitter runs, for the entrypoint to compare
WAITING_MESSAGE = "waiting for cluster resources"
# Between writing the run folder and Ray knowing the job, a reader must not call the run lost.
SUBMIT_GRACE_S = 30.0
# Ray calls a job stopped as soon as it is asked to, and gives its process 3 s to go: the worker
# records its own end meanwhile, and a reader records it only after this long.
ENDED_GRACE_S = 5.0
# The job kinds that time or train a model, and so want what a run would get: a GPU when there are.
GPU_KINDS = ("train", "estimate")
# Environment a job's entrypoint gets from the submitter, when set there.
PASSED_ENV = ("TRANSFER_LAB_STEP_DELAY", "TRANSFER_LAB_DATA_ROOT", "TORCH_HOME")


def submit(
    run: Run, target: str, options: list[str], *, kind: str, plan: Mapping[str, Any], address: str
) -> None:
    """Submit ``run`` as a Ray job whose entrypoint is the worker in Ray mode."""
    python = shlex.split(os.environ.get(PYTHON_ENV, "")) or [sys.executable]
    folder = str(run.directory.resolve())
    command = [*python, "-m", queue.WORKER_MODULE, folder, "--target", target, "--ray", *options]
    entrypoint = (
        f"cd {shlex.quote(folder)} && exec {shlex.join(command)} >> {shlex.quote(str(run.log_file))} 2>&1"
    )
    env = {
        storage.HOME_ENV: str(storage.home()),
        "PYTHONPATH": jobs.worker_pythonpath(),
        "PYTHONUNBUFFERED": "1",
        VERSIONS_ENV: json.dumps(versions()),
    } | {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
    client = _client(address)
    try:
        client.submit_job(
            entrypoint=entrypoint,
            submission_id=run.id,
            runtime_env={"env_vars": env},
            metadata={"app": "transfer-lab", "kind": kind},
            **_entrypoint_resources(address, kind, int(plan.get("workers") or 1)),
        )
    except (RuntimeError, ConnectionError, ValueError) as exc:
        raise BackendError(f"could not submit the job to Ray at {address}: {one_line(exc)}") from exc


def reconcile(run: Run, gone_state: RunState) -> dict[str, Any]:
    """The run's status after settling it with Ray: a job Ray reports ended (failed, stopped, its
    node lost) whose worker recorded nothing is finished here with Ray's reason; a running job
    whose heartbeat stopped is stopped and failed. An unreachable cluster settles nothing."""
    current = run.status()
    if not state_of(current).active:
        return current
    address = of_run(current).address or ""
    try:
        job = _job(address, run.id)
        verdict = _verdict(run, current, job, gone_state, address)
    except BackendError:
        return current  # no word from Ray: nothing can be told, and nothing is changed
    if verdict is None:
        return current
    keeper = StatusKeeper.take(run, timeout_s=jobs.LOCK_PATIENCE_S)
    if keeper is None:
        return run.status()  # another reader is recording this run's end
    with keeper:
        if state_of(keeper.data).active:  # the worker may have finished meanwhile
            state, reason = verdict
            tail = run.log_tail()
            keeper.set_state(
                state, f"{reason}; last words: {tail}" if tail and state is RunState.FAILED else reason
            )
        return keeper.data


def cancel(run: Run) -> None:
    """Ask Ray to stop the run's job: its worker gets SIGTERM and records ``cancelled``; a job
    still waiting for resources never starts."""
    address = of_run(run.status()).address or ""
    try:
        _client(address).stop_job(run.id)
    except (RuntimeError, ConnectionError) as exc:
        if "404" not in str(exc):  # a job Ray never had is settled by reconcile
            raise BackendError(f"could not stop job {run.id} on Ray at {address}: {one_line(exc)}") from exc


def waiting_message(run: Run, current: Mapping[str, Any]) -> str:
    """What a run waiting for Ray says: Ray neither queues jobs first-in-first-out nor tells a
    place in line, so this counts this app's earlier runs that still wait."""
    submitted = current.get("submitted") or 0.0
    earlier = sum(
        1
        for other in all_runs()
        if other.id != run.id
        and (status := other.status()).get("backend") == RAY
        and state_of(status) is RunState.QUEUED
        and (status.get("submitted") or 0.0) < submitted
    )
    if not earlier:
        return WAITING_MESSAGE
    return f"{WAITING_MESSAGE}; {earlier} earlier run{'s' if earlier > 1 else ''} of this app still wait{'s' if earlier == 1 else ''}"


def versions() -> dict[str, str | None]:
    """What must be the same on every node: Transfer Lab, torch, torchvision and Ray."""
    return {
        "transfer-lab": app_version(),
        **{name: installed(name) for name in ("torch", "torchvision", "ray")},
    }


def check_versions() -> None:
    """In the entrypoint: refuse to run, in one line, on a node whose versions differ from the
    submitter's (no runtime pip install: nodes may be offline)."""
    expected = json.loads(os.environ.get(VERSIONS_ENV) or "{}")
    here = versions()
    differ = [
        f"{name} {here.get(name)} here, {want} on the app server"
        for name, want in expected.items()
        if not _same_version(name, here.get(name), want)
    ]
    if differ:
        raise BackendError(
            f"versions differ on node {platform.node()}: {'; '.join(differ)}; "
            "install the same Transfer Lab, torch and Ray on every node"
        )


# ---------------------------------------------------------------------------- internals


def _same_version(name: str, here: str | None, there: str | None) -> bool:
    """Equal versions, but for their local parts: a torch build's (``+cpu`` on a web server,
    ``+cu130`` on GPU nodes) never counts, and a checkout's git commit (``0.1.0+3fa2b1c``) only
    when both sides know theirs (a node may run an installed copy, or be unable to ask git)."""
    if here is None or there is None:
        return here == there
    if name == "transfer-lab" and ("+" in here) == ("+" in there):
        return here == there
    return here.split("+")[0] == there.split("+")[0]


@functools.cache
def _client(address: str) -> JobSubmissionClient:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except ConnectionError:
        raise BackendError(
            f"no Ray cluster answers at {address}: is its head running, and is that its dashboard's port?"
        ) from None
    except (RuntimeError, ValueError) as exc:
        raise BackendError(f"Ray at {address} refused this app: {one_line(exc)}") from exc


def _job(address: str, run_id: str) -> JobDetails | None:
    """Ray's record of the run's job; None when Ray has none."""
    try:
        return _client(address).get_job_info(run_id)
    except (RuntimeError, ConnectionError) as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            return None
        raise BackendError(f"no answer from Ray at {address}: {one_line(exc)}") from exc


def _verdict(
    run: Run, current: Mapping[str, Any], job: JobDetails | None, gone_state: RunState, address: str
) -> tuple[RunState, str] | None:
    """How the run ended, when Ray says its job has ended and the worker did not say so; None
    while it waits or runs."""
    now = time.time()
    if job is None:
        if now - (current.get("submitted") or 0.0) < SUBMIT_GRACE_S:
            return None
        return gone_state, f"Ray at {address} has no job {run.id} (was the cluster restarted?)"
    status = str(job.status)
    if status == "PENDING":
        return None
    if status == "RUNNING":
        beat = current.get("heartbeat")
        if current.get("state") == RunState.RUNNING and beat and now - beat > jobs.HEARTBEAT_TIMEOUT_S:
            cancel(run)
            return (
                RunState.FAILED,
                f"the job stopped responding (no heartbeat for {now - beat:.0f} s) and was stopped",
            )
        return None
    if now - (job.end_time or 0) / 1000 < ENDED_GRACE_S:
        return None  # the worker may still be recording how it ended
    if run.cancel_requested():
        return RunState.CANCELLED, CANCELLED_MESSAGE
    if status == "STOPPED":
        return RunState.CANCELLED, "stopped on the Ray cluster"
    if status == "FAILED":
        return (
            RunState.FAILED,
            f"Ray reports the job failed: {one_line(RuntimeError(job.message or ''), 400).removeprefix('RuntimeError: ')}",
        )
    return RunState.FAILED, "the job ended without recording how"


def _entrypoint_resources(address: str, kind: str, workers: int) -> dict[str, Any]:
    """What the entrypoint reserves: nothing of its own for a multi-worker run (Ray Train's
    workers reserve theirs); a GPU for training or timing a plan on a cluster with GPUs; else CPUs."""
    raw = os.environ.get(CPUS_ENV, "").strip() or "1"
    try:
        cpus = float(raw)
    except ValueError:
        raise BackendError(f"{CPUS_ENV}={raw!r}: expected a number of CPUs") from None
    custom = _custom_resources()
    if kind == "train" and workers > 1:
        return {"entrypoint_num_cpus": 0, "entrypoint_resources": custom}
    if kind in GPU_KINDS and _cluster_gpus(address) > 0:
        return {"entrypoint_num_gpus": 1, "entrypoint_resources": custom}
    return {"entrypoint_num_cpus": cpus, "entrypoint_resources": custom}


def _custom_resources() -> dict[str, float] | None:
    raw = os.environ.get(RESOURCES_ENV, "").strip()
    if not raw:
        return None
    try:
        resources = json.loads(raw)
        if not isinstance(resources, dict) or not all(isinstance(v, int | float) for v in resources.values()):
            raise ValueError
    except ValueError:
        raise BackendError(
            f'{RESOURCES_ENV}={raw!r}: expected a JSON object of amounts, such as {{"a100": 1}}'
        ) from None
    return {str(name): float(amount) for name, amount in resources.items()}


def _cluster_gpus(address: str) -> float:
    """How many GPUs the cluster's nodes have together, asked of the dashboard."""
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=address, detail=True, raise_on_missing_output=False)
    except Exception as exc:  # the state API raises many kinds; any means "cannot tell"
        raise BackendError(f"could not list the nodes of Ray at {address}: {one_line(exc)}") from exc
    return sum((node.resources_total or {}).get("GPU", 0.0) for node in nodes if node.state == "ALIVE")
