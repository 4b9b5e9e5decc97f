"""How much of the home folder's disk each owner's runs and data sets take.

What the disk quota charges and the Admin page shows. An owner is charged for their runs (every
job's folder: training, validations, analyses) and for each data set they uploaded, from the
moment its zip is kept (while it waits for its validation) on; a data set
that several people uploaded is charged in full to each of them, as each would need it alone.
Sizes are what the files hold. A finished run and a validated data set no longer change, so
each is measured once per process, until its status (a pin, a deletion) changes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core import access, storage
from core.jobs.run import Run, all_runs

# folder -> (the stamp it was measured at, its bytes)
_measured: dict[Path, tuple[object, int]] = {}


@dataclass
class OwnerUsage:
    """One owner's share of the disk: bytes in runs and in data sets, and how many of each."""

    owner: str
    run_bytes: int = 0
    dataset_bytes: int = 0
    runs: int = 0
    datasets: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.run_bytes + self.dataset_bytes


def disk_by_owner() -> dict[str, OwnerUsage]:
    """Every owner with something on disk, and how much."""
    usage: dict[str, OwnerUsage] = {}
    for run in all_runs():
        owner = run.record().owner or access.LOCAL_OWNER
        entry = usage.setdefault(owner, OwnerUsage(owner))
        entry.run_bytes += run_bytes(run)
        entry.runs += 1
    for digest, size in [*((d, dataset_bytes(folder)) for d, folder in datasets()), *pending_uploads()]:
        for owner in dataset_owners(digest):
            entry = usage.setdefault(owner, OwnerUsage(owner))
            entry.dataset_bytes += size
            entry.datasets.append(digest)
    return usage


def stored_bytes() -> int:
    """What all runs and data sets take: each data set once, however many people own it."""
    return (
        sum(run_bytes(run) for run in all_runs())
        + sum(dataset_bytes(folder) for _, folder in datasets())
        + sum(size for _, size in pending_uploads())
    )


def pending_uploads() -> list[tuple[str, int]]:
    """``(sha256, bytes)`` of every uploaded zip still waiting for (or in) its validation."""
    if not storage.uploads_dir().is_dir():
        return []
    found = []
    for path in storage.uploads_dir().glob("*.zip"):
        with contextlib.suppress(FileNotFoundError):  # its validation may just have removed it
            found.append((path.stem, path.stat().st_size))
    return found


def dataset_bytes(folder: Path) -> int:
    """A validated data set's folder, measured once (it never changes once validated)."""
    return _measure(folder, (folder / "manifest.json").stat().st_mtime_ns)


def owner_bytes(owner: str) -> int:
    """What ``owner``'s runs and data sets take now."""
    found = disk_by_owner().get(owner)
    return found.total_bytes if found else 0


def run_bytes(run: Run) -> int:
    """A run's folder; measured again while it runs, once when it has finished."""
    current = run.status()
    stamp = (current.state, current.finished) if current.state.final else None
    return _measure(run.directory, stamp)


def datasets() -> list[tuple[str, Path]]:
    """``(sha256, folder)`` of every validated data set."""
    if not storage.datasets_dir().is_dir():
        return []
    return [
        (folder.name, folder)
        for folder in storage.datasets_dir().iterdir()
        if folder.is_dir() and not folder.name.startswith(".") and (folder / "manifest.json").is_file()
    ]


def dataset_owners_file(digest: str) -> Path:
    """Who uploaded the data set ``datasets/<digest>/``: a JSON list beside it."""
    return storage.datasets_dir() / f"{digest}.owners.json"


def dataset_owners(digest: str) -> list[str]:
    """A data set from before owners were kept belongs to ``local``."""
    return access.stored_owners(dataset_owners_file(digest)) or [access.LOCAL_OWNER]


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under ``folder`` (links not followed); 0 when it is gone."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue  # removed while we walked: a temporary file
    return total


def _measure(folder: Path, stamp: object) -> int:
    """``folder_bytes``, remembered while ``stamp`` stays the same (None: always measure)."""
    cached = _measured.get(folder)
    if stamp is not None and cached is not None and cached[0] == stamp:
        return cached[1]
    size = folder_bytes(folder)
    _measured[folder] = (stamp, size)
    return size


def home_disk() -> tuple[int, int]:
    """``(total, free)`` bytes of the file system the home folder is on (or will be)."""
    place = storage.home()
    while not place.exists() and place != place.parent:
        place = place.parent
    disk = shutil.disk_usage(place)
    return disk.total, disk.free
