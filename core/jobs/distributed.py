"""One run on several processes, so that a plan's ``workers`` means the same on both backends.

Each backend launches the ranks its own way (``Backend.launch_ranks``): the local one starts
``torchrun --standalone --nproc-per-node N`` on this module (``with_torchrun``), the Ray job's
entrypoint runs Ray Train's ``TorchTrainer`` with N workers (``with_ray_train``). Either
way each process runs the same training code as a single process (DistributedDataParallel:
NCCL between GPUs, gloo between CPUs), rank 0 alone writes the run directory and its events,
and the worker that started them keeps the run's status (heartbeat, cancel, final state).

Run as ``python -m core.jobs.distributed RUN_DIR``, it is one torchrun rank. Torch and Ray are
imported only where they run: the web server imports this package.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from core import storage
from core.errors import TransferLabError
from core.jobs.run import Run, note_provenance, run_events
from core.tracking import TrackedRun, Tracking, mirrored
from core.training.events import Emit, Event

# How long torchrun's ranks get to stop after SIGTERM before they are killed.
STOP_GRACE_S = 10.0


class DistributedError(TransferLabError, RuntimeError):
    """The processes of a multi-worker run failed."""


def train_rank(config: dict[str, Any]) -> None:
    """One process of the run: the training entry point, rank 0 reporting to the run directory."""
    from core.training.device import ranks_from_env
    from core.training.train import run as train_run

    storage.keep_caches_home()
    run = Run(Path(config["run_dir"]))
    if not ranks_from_env().is_main:
        train_run(run.directory, _discard)
        return
    tracked = TrackedRun(run.directory, run.record().owner)
    with mirrored(Tracking.configured(), tracked, rank_events(run)) as emit:
        train_run(run.directory, emit)


def rank_events(run: Run) -> Emit:
    """Rank 0's events: ``events.jsonl``, and the data set's identity and the trackers' places
    in the run record."""
    return run_events(run, None, functools.partial(note_provenance, run))


def with_torchrun(run: Run, workers: int) -> None:
    """``torchrun --standalone`` on this machine, in a process group of its own, so that a cancel
    stops every rank: SIGTERM first (torchrun passes it on), then SIGKILL."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(workers),
    ]
    command += ["-m", __name__, str(run.directory)]
    ranks = subprocess.Popen(command, cwd=run.directory, start_new_session=True)
    try:
        code = ranks.wait()
    except BaseException:
        _stop_group(ranks)
        raise
    if code != 0:
        raise DistributedError(f"torchrun's {workers} processes failed (exit code {code}): {run.log_tail()}")


def _stop_group(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def with_ray_train(run: Run, workers: int) -> None:
    """Ray Train's ``TorchTrainer`` on the job's own cluster: one worker per process, a GPU each
    when the cluster has GPUs (and the plan does not ask for the CPU), one CPU each otherwise.

    The entrypoint reserves nothing and Ray Train's controller none either, so two workers fit
    a two-CPU cluster. Ray Train keeps its own files under the run directory's ``ray/``.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(log_to_driver=True)  # the cluster this job runs on: Ray tells its entrypoint where
    try:
        device = str(run.plan_fields().get("device") or "auto")
        use_gpu = device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0
        trainer = TorchTrainer(
            train_rank,
            train_loop_config={"run_dir": str(run.directory)},
            scaling_config=ScalingConfig(
                num_workers=workers,
                use_gpu=use_gpu,
                resources_per_worker={"CPU": 1, "GPU": 1} if use_gpu else {"CPU": 1},
            ),
            run_config=RunConfig(name="train", storage_path=str(run.directory / "ray")),
        )
        trainer.fit()
    finally:
        ray.shutdown()


def _discard(event: Event) -> None:
    """Ranks other than 0 report nothing: one run, one stream of events."""


if __name__ == "__main__":
    train_rank({"run_dir": sys.argv[1]})
