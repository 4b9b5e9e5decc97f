"""Runs and data sets on disk as the app leaves them, written directly so that a test of what
reads them (retention, limits, the Admin page) needs no worker and no upload."""

from __future__ import annotations

import time
from pathlib import Path

from core import storage
from core.jobs import usage
from core.jobs.kinds import TRAIN, JobKind
from core.jobs.run import Run, RunRecord, RunState, StatusKeeper
from core.limits import DAY_S, Limits
from core.storage import write_json

NOW = time.time()
KEEP = Limits(keep_runs_days=30.0)


def stored_run(
    run_id: str,
    finished_days_ago: float | None = 40.0,
    data: str = "/data/faces",
    owner: str = "alice",
    kind: JobKind = TRAIN,
) -> Run:
    """A run on disk as its worker leaves it: finished ``finished_days_ago`` days before ``NOW``
    (None: still queued), kept through its ``StatusKeeper`` as every run is."""
    run = Run(storage.runs_dir() / run_id)
    run.directory.mkdir(parents=True)
    write_json(run.plan_file, {"backbone": "resnet18", "case": 1, "data": data, "epochs": 1})
    run.write_record(RunRecord(owner=owner, kind=kind, dataset_name="faces"))
    (run.directory / "model.pt2").write_bytes(b"m" * 2048)
    with StatusKeeper.take(run) as keeper:
        keeper.set_state(RunState.QUEUED, submitted=NOW - 50 * DAY_S, kind=kind)
        if finished_days_ago is not None:
            keeper.set_state(RunState.DONE)
            keeper.update(finished=NOW - finished_days_ago * DAY_S)
    return run


def stored_dataset(digest: str, owners: dict[str, float] | list[str] | None) -> Path:
    """A validated upload ``datasets/<digest>/`` and its owners file (``{owner: days ago}``, an
    old-style list, or none at all)."""
    folder = storage.datasets_dir() / digest
    (folder / "images" / "cat").mkdir(parents=True)
    (folder / "images" / "cat" / "0.jpg").write_bytes(b"i" * 4096)
    write_json(folder / "manifest.json", {"source": {"kind": "zip", "name": f"{digest[:4]}.zip"}})
    owners_file = usage.dataset_owners_file(digest)
    if isinstance(owners, dict):
        write_json(owners_file, {owner: NOW - days * DAY_S for owner, days in owners.items()})
    elif isinstance(owners, list):
        write_json(owners_file, owners)
    return folder


def sha(letter: str) -> str:
    """A data set's digest made of one letter, readable in a test."""
    return letter * 64
