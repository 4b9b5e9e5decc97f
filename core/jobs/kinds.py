"""The kinds of job, in one table: what each one's worker calls, and how it is run and counted.

A kind's ``name`` is what ``status.json`` and ``run.json`` record, so stored runs of every
version keep theirs. The run's records resolve that name here once, when they are read, and
carry the ``JobKind`` itself from then on: callers compare kinds with ``is`` and read everything
else about one from its row, never from its name. A job being submitted is resolved once into a
``Job`` (its kind, target, place in the queue and time limit), which the backend then runs.

A race is no kind of its own: its lanes are training runs, and its record lives under ``races/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.jobs.queue import WORKER_MODULE


@dataclass(frozen=True)
class JobKind:
    """One kind of job. ``side``: it starts at once beside training (an upload's check must not
    wait behind a long run) and counts against ``max_side_jobs``; training waits in the queue.
    ``wants_gpu``: it trains or times a model, so it gets what a run would, a GPU where there are."""

    name: str
    target: str  # the worker's entry point, ``module:function``, called as ``function(run_dir, emit)``
    label: str  # what the admin's jobs table calls it
    side: bool
    wants_gpu: bool
    time_limit_s: float | None = None


TRAIN = JobKind(
    "train", "core.training.train:run", "training",
    side=False, wants_gpu=True,
)  # fmt: skip
# Validating 100,000 photos takes minutes; a job that takes longer is stopped and says so.
VALIDATE = JobKind(
    "validate", "core.jobs.uploads:validate_upload", "validation",
    side=True, wants_gpu=False, time_limit_s=15 * 60,
)  # fmt: skip
# The analysis stops starting backbones after its own budget; this limit catches the rest.
ANALYSE = JobKind(
    "analysis", "core.jobs.analysis:analyse_data", "analysis",
    side=True, wants_gpu=False, time_limit_s=20 * 60,
)  # fmt: skip
PREDICT = JobKind(
    "predict", "core.jobs.predictions:predict_batch", "batch prediction",
    side=True, wants_gpu=False, time_limit_s=15 * 60,
)  # fmt: skip
ESTIMATE = JobKind(
    "estimate", "core.jobs.estimate:time_plan", "estimate",
    side=True, wants_gpu=True, time_limit_s=10 * 60,
)  # fmt: skip
# A shipped sample's or a server folder's first check: the same work as an upload's.
VALIDATE_SOURCE = JobKind(
    "validate_source", "core.jobs.sources:validate_source", "folder validation",
    side=True, wants_gpu=False, time_limit_s=15 * 60,
)  # fmt: skip
# A finished run scored on another labelled data set (Results).
EVALUATE = JobKind(
    "evaluate", "core.jobs.evaluation:score_run", "evaluation",
    side=True, wants_gpu=False, time_limit_s=15 * 60,
)  # fmt: skip
# Heatmaps of a finished run's model (Results, Predict): a backward pass per image.
EXPLAIN = JobKind(
    "explain", "core.jobs.explanations:explain_images", "heatmaps",
    side=True, wants_gpu=False, time_limit_s=15 * 60,
)  # fmt: skip
KINDS = (TRAIN, VALIDATE, ANALYSE, PREDICT, ESTIMATE, VALIDATE_SOURCE, EVALUATE, EXPLAIN)
KIND_NAMES = tuple(kind.name for kind in KINDS)


def kind_of(name: str) -> JobKind:
    """The kind a run records by ``name``; ``ValueError`` for a name no version wrote."""
    for kind in KINDS:
        if kind.name == name:
            return kind
    raise ValueError(f"kind {name!r} is none of {', '.join(KIND_NAMES)}")


@dataclass(frozen=True)
class Job:
    """One submission, resolved: its kind, the target its worker calls, whether it waits in the
    training queue, its time limit, and how many processes it trains on."""

    kind: JobKind
    target: str
    queued: bool
    time_limit_s: float | None
    workers: int = 1

    def worker_arguments(self, run_dir: Path) -> list[str]:
        """What follows the interpreter to start this job's worker on the run in ``run_dir``: the
        folder is made absolute, which is also how a reader tells the worker from a stranger with
        its old pid."""
        arguments = ["-m", WORKER_MODULE, str(run_dir.resolve()), "--target", self.target]
        if not self.queued:
            arguments.append("--unqueued")
        if self.time_limit_s:
            arguments += ["--time-limit", f"{self.time_limit_s:g}"]
        return arguments
