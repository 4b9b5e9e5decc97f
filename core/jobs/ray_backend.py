"""Runs as Ray jobs: the jobs backend for a team whose GPUs sit in several machines.

Each job is submitted through Ray's Job Submission API, ``submission_id`` being the run id, and
its entrypoint is the same worker as on the local backend, which finds ``ray`` in the run's
status: it skips the local queue (placing work is Ray's job), keeps ``status.json`` (heartbeat, final state) in the
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
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import one_line
from core.jobs import backend
from core.jobs.backend import RAY, BackendError
from core.jobs.kinds import Job
from core.jobs.run import (
    CANCELLED_MESSAGE,
    Run,
    RunState,
    RunStatus,
    StatusKeeper,
    all_runs,
    app_version,
    installed,
)

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

ADDRESS_ENV = "RAY_ADDRESS"
INSTALL = "pip install -r requirements-ray.txt"
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
# Environment a job's entrypoint gets from the submitter, when set there.
PASSED_ENV = ("TRANSFER_LAB_STEP_DELAY", "TRANSFER_LAB_DATA_ROOT", "TORCH_HOME")


@dataclass(frozen=True)
class RayBackend:
    """Ray jobs on the cluster whose dashboard is at ``address``."""

    address: str
    name: str = RAY

    @classmethod
    def configured(cls) -> RayBackend:
        """Ray installed here, and ``RAY_ADDRESS`` the dashboard's address."""
        chosen = f"{backend.BACKEND_ENV}={RAY}"
        if importlib.util.find_spec("ray") is None:
            raise BackendError(f"{chosen} needs Ray, which is not installed here: {INSTALL}")
        address = os.environ.get(ADDRESS_ENV, "").strip()
        if not address:
            raise BackendError(
                f"{chosen} needs {ADDRESS_ENV}, the Ray dashboard's address (http://HEAD:8265)"
            )
        if not address.startswith(("http://", "https://")):
            # Ray itself reads RAY_ADDRESS, and takes a bare host:port for its internal (GCS) address.
            raise BackendError(
                f"{ADDRESS_ENV}={address!r}: give the Ray dashboard's address, such as http://HEAD:8265"
            )
        return cls(address)

    @classmethod
    def of_status(cls, status: RunStatus) -> RayBackend:
        return cls(status.address or "")

    def status_fields(self) -> dict[str, str]:
        return {"backend": self.name, "address": self.address}

    def submit(self, run: Run, keeper: StatusKeeper, job: Job) -> None:
        """Submit ``run`` as a Ray job whose entrypoint is the worker; a refusal fails the run."""
        python = shlex.split(os.environ.get(PYTHON_ENV, "")) or [sys.executable]
        folder = shlex.quote(str(run.directory.resolve()))
        command = shlex.join([*python, *job.worker_arguments(run.directory)])
        entrypoint = f"cd {folder} && exec {command} >> {shlex.quote(str(run.log_file))} 2>&1"
        env = (
            backend.worker_environment()
            | {VERSIONS_ENV: json.dumps(versions())}
            | {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
        )
        try:
            self._submit_job(run, job, entrypoint, env)
        except BackendError as exc:
            keeper.set_state(RunState.FAILED, str(exc))
            raise

    def settle(self, run: Run, gone_state: RunState) -> RunStatus:
        """A job Ray reports ended (failed, stopped, its node lost) whose worker recorded nothing
        is finished with Ray's reason; a running job whose heartbeat stopped is stopped and
        failed. An unreachable cluster settles nothing."""
        current = run.status()
        try:
            final = self._final_state(run, current, self._job(run.id), gone_state)
        except BackendError:
            return current  # no word from Ray: nothing can be told, and nothing is changed
        if final is None:
            return current
        keeper = StatusKeeper.take(run, timeout_s=backend.LOCK_PATIENCE_S)
        if keeper is None:
            return run.status()  # another reader is recording this run's end
        with keeper:
            if keeper.status.state.active:  # the worker may have finished meanwhile
                state, reason = final
                tail = run.log_tail()
                keeper.set_state(
                    state, f"{reason}; last words: {tail}" if tail and state is RunState.FAILED else reason
                )
            return keeper.status

    def cancel(self, run: Run) -> None:
        """Ask Ray to stop the run's job: its worker gets SIGTERM and records ``cancelled``; a job
        still waiting for resources never starts. A job Ray never had is settled by ``settle``."""
        try:
            _client(self.address).stop_job(run.id)
        except (RuntimeError, ConnectionError) as exc:
            if self._job(run.id) is not None:
                raise BackendError(
                    f"could not stop job {run.id} on Ray at {self.address}: {one_line(exc)}"
                ) from exc

    def waiting(self, run: Run, current: RunStatus) -> backend.Waiting:
        """Ray neither queues jobs first-in-first-out nor tells a place in line, so the message
        counts this app's earlier runs that still wait on the same cluster."""
        submitted = current.submitted or 0.0
        earlier = sum(
            1
            for other in all_runs()
            if other.id != run.id
            and (status := other.status()).state is RunState.QUEUED
            and backend.of_run(status) == self
            and (status.submitted or 0.0) < submitted
        )
        message = WAITING_MESSAGE
        if earlier:
            message += f"; {earlier} earlier run{'s' if earlier > 1 else ''} of this app still wait{'s' if earlier == 1 else ''}"
        return backend.Waiting(message=message)

    def keeper(self, run: Run, lock_fd: int | None) -> StatusKeeper | None:
        """No ``worker.lock``: it means nothing across hosts, where liveness is Ray's job status."""
        return StatusKeeper(run, -1)

    def prepare(self, run: Run, keeper: StatusKeeper, *, queued: bool) -> None:
        """Ray has placed the job, so it waits for nothing; it only checks this node's versions."""
        check_versions()

    def launch_ranks(self, run: Run, workers: int) -> None:
        from core.jobs import distributed

        distributed.with_ray_train(run, workers)

    def _submit_job(self, run: Run, job: Job, entrypoint: str, env: dict[str, str]) -> None:
        client = _client(self.address)
        try:
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=run.id,
                runtime_env={"env_vars": env},
                metadata={"app": "transfer-lab", "kind": job.kind.name},
                **_entrypoint_resources(self.address, job),
            )
        except (RuntimeError, ConnectionError, ValueError) as exc:
            raise BackendError(f"could not submit the job to Ray at {self.address}: {one_line(exc)}") from exc

    def _job(self, run_id: str) -> JobDetails | None:
        """Ray's record of the run's job; None when Ray has none.

        Ray's client raises a bare ``RuntimeError`` for every refused request, a missing job
        included, so a refusal is told from a missing job by the list of jobs Ray has."""
        client = _client(self.address)
        try:
            return client.get_job_info(run_id)
        except (RuntimeError, ConnectionError) as exc:
            try:
                known = any(job.submission_id == run_id for job in client.list_jobs())
            except (RuntimeError, ConnectionError):
                known = True  # Ray answers nothing: it cannot be told
            if not known:
                return None
            raise BackendError(f"no answer from Ray at {self.address}: {one_line(exc)}") from exc

    def _final_state(
        self, run: Run, current: RunStatus, job: JobDetails | None, gone_state: RunState
    ) -> tuple[RunState, str] | None:
        """How the run ended, when Ray says its job has ended and the worker did not say so; None
        while it waits or runs."""
        from ray.job_submission import JobStatus

        now = time.time()
        if job is None:
            if now - (current.submitted or 0.0) < SUBMIT_GRACE_S:
                return None
            return gone_state, f"Ray at {self.address} has no job {run.id} (was the cluster restarted?)"
        if job.status is JobStatus.PENDING:
            return None
        if job.status is JobStatus.RUNNING:
            beat = current.heartbeat
            if current.state is RunState.RUNNING and beat and now - beat > backend.HEARTBEAT_TIMEOUT_S:
                self.cancel(run)
                return (
                    RunState.FAILED,
                    f"the job stopped responding (no heartbeat for {now - beat:.0f} s) and was stopped",
                )
            return None
        if now - (job.end_time or 0) / 1000 < ENDED_GRACE_S:
            return None  # the worker may still be recording how it ended
        if run.cancel_requested():
            return RunState.CANCELLED, CANCELLED_MESSAGE
        if job.status is JobStatus.STOPPED:
            return RunState.CANCELLED, "stopped on the Ray cluster"
        if job.status is JobStatus.FAILED:
            reason = one_line(RuntimeError(job.message or ""), 400).removeprefix("RuntimeError: ")
            return RunState.FAILED, f"Ray reports the job failed: {reason}"
        return RunState.FAILED, "the job ended without recording how"


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


def _entrypoint_resources(address: str, job: Job) -> dict[str, Any]:
    """What the entrypoint reserves: nothing of its own for a multi-worker run (Ray Train's
    workers reserve theirs); a GPU for training or timing a plan on a cluster with GPUs; else CPUs."""
    raw = os.environ.get(CPUS_ENV, "").strip() or "1"
    try:
        cpus = float(raw)
    except ValueError:
        raise BackendError(f"{CPUS_ENV}={raw!r}: expected a number of CPUs") from None
    custom = _custom_resources()
    if job.workers > 1:
        return {"entrypoint_num_cpus": 0, "entrypoint_resources": custom}
    if job.kind.wants_gpu and _cluster_gpus(address) > 0:
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
