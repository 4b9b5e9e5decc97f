"""The runs table's reading of run folders: each run's ``RunRow``, its owner, and what is damaged.

A runs table is read on every rerun of every page, and a long history of finished runs must
cost a ``stat`` each: a plan, record or metrics file is parsed again only when it changes (its
inode, size or time), and only the fields a table shows are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from core.access import Viewer
from core.jobs.run import UNKNOWN_OWNER, Run, RunState, RunStatus, read_run_file
from core.storage import Damaged

# What a runs table shows from each run's files; only these fields are kept in _summaries.
_SUMMARY_FIELDS = {
    "plan.json": ("backbone", "case", "data"),
    "metrics.json": ("best_val_accuracy", "majority_rate"),
    "run.json": ("dataset_name", "owner"),
}
# path -> (the file's stat stamp, its summary fields, what is wrong with it): a finished run's
# files are parsed once.
_summaries: dict[Path, tuple[tuple[int, int, int] | None, dict[str, Any], str | None]] = {}


@dataclass(frozen=True)
class RunRow(RunStatus):
    """A run as the app shows it: its status, judged (see ``judged``), with its id, its place in
    line, and what a runs table shows of its plan, record and metrics (None where a file is
    missing or damaged)."""

    run_id: str = ""
    queue_position: int | None = None
    owner: str | None = None
    dataset_name: str | None = None
    backbone: str | None = None
    case: int | None = None
    data: str | None = None
    best_val_accuracy: float | None = None
    majority_rate: float | None = None


def visible(run: Run, viewer: Viewer) -> bool:
    """Whether ``viewer`` may see ``run``; its owner is read once until ``run.json`` changes."""
    return viewer.sees_all or viewer.may_see(owner_of(run))


def owner_of(run: Run) -> str | None:
    """Who started ``run``, from its record; ``UNKNOWN_OWNER`` when the record is damaged."""
    return UNKNOWN_OWNER if _damage(run.record_file) else summary(run.record_file)["owner"]


def judged(run: Run, current: RunStatus) -> RunStatus:
    """``current`` as the app shows it: ``damaged``, saying what is wrong, when one of the run's
    records cannot be read (a damaged status already says so itself)."""
    damage = [
        problem for path in (run.record_file, run.plan_file, run.metrics_file) if (problem := _damage(path))
    ]
    if not damage or current.state is RunState.DAMAGED:
        return current
    return replace(current, state=RunState.DAMAGED, message="; ".join(damage))


def row(run: Run, current: RunStatus, queue_position: int | None) -> RunRow:
    """A runs table's row, from the run's status, its place in line, its plan, record and metrics."""
    status = judged(run, current)
    files = (run.plan_file, run.record_file, run.metrics_file)
    shown = {key: value for path in files for key, value in summary(path).items()} | {"owner": owner_of(run)}
    return RunRow(
        **{f.name: getattr(status, f.name) for f in fields(RunStatus)},
        run_id=run.id,
        queue_position=queue_position,
        **shown,
    )


def place_in(line: list[str], run: Run) -> int | None:
    """1 for the run next in ``line``, 2 for the one after it...; None when it is not waiting."""
    return line.index(run.id) + 1 if run.id in line else None


def newest_first(rows: list[RunRow]) -> list[RunRow]:
    return sorted(rows, key=lambda row: (row.submitted or 0.0, row.run_id), reverse=True)


def summary(path: Path) -> dict[str, Any]:
    """The runs table's fields of a plan, record or metrics file (None where it is missing or
    damaged)."""
    return dict(_parsed(path)[1])


def _damage(path: Path) -> str | None:
    """What is wrong with a plan, record or metrics file; None for a sound or missing one."""
    return _parsed(path)[2]


def _parsed(path: Path) -> tuple[tuple[int, int, int] | None, dict[str, Any], str | None]:
    """A run file's summary fields and damage, parsed only when the file has changed."""
    stamp = _stamp(path)  # before reading: a file replaced in between is read again next time
    cached = _summaries.get(path)
    if cached is None or cached[0] != stamp:
        data = read_run_file(path) if stamp else None
        fields = {
            key: data.get(key) if isinstance(data, dict) else None for key in _SUMMARY_FIELDS[path.name]
        }
        cached = _summaries[path] = (stamp, fields, str(data) if isinstance(data, Damaged) else None)
    return cached


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes whenever ``write_json`` replaces the file, even within one clock tick: its inode."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_ino, info.st_size
