"""Retention: finished runs go after a configured age, unless pinned; data sets when nobody needs them.

The disk of a shared instance only grows unless something deletes. ``Limits.keep_runs_days``
says how long a finished run (training, a validation, an analysis: every job under ``runs/``)
is kept after it finished; a queued or running run, a pinned one and one whose worker still
holds its lock are never deleted. An admin pins a run (a ``pinned`` file in its folder) to keep
it until unpinned.

A data set (``datasets/<sha>/``) is content-addressed and may have several owners. Each owner's
reference is the time they last uploaded it, kept in ``datasets/<sha>.owners.json`` as
``{owner: epoch seconds}`` (a file from before is a list, counted from the file's last change);
it lapses ``keep_runs_days`` after that upload. The data set goes once every reference has
lapsed and no run that is kept uses it (its plan's ``data`` is the folder or inside it, or its
record names the data set's sha256), so a run keeps its data for as long as the run is kept;
while an active run has not yet said which data set it reads, none goes.
The owners file goes with its folder.

``sweep`` deletes all of that, plus what interrupted work left: upload zips whose validation has
ended, half-deleted folders, staging folders and temporary files older than a day, and race
records whose runs are all gone. Everything is deleted by renaming it to a hidden trash name in
the same folder first (atomic: no reader ever sees half a run or half a data set), then removing
the trash. The app sweeps when the server starts and then at most once an hour (``sweep_if_due``:
a timestamp in the home folder, no daemon); ``python -m core sweep`` does it from cron.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core import access, storage
from core.errors import TransferLabError
from core.jobs import queue, usage
from core.jobs.run import Run, RunStatus, StatusKeeper, all_runs
from core.limits import DAY_S, Limits

TRASH_PREFIX = ".trash-"
SWEEP_EVERY_S = 3600.0
# Staging folders and temporary files younger than this may belong to work under way.
LEFTOVER_AGE_S = 24 * 3600.0
# An upload zip is written before its validation job exists: without a job, it waits this long.
UPLOAD_GRACE_S = 3600.0


class CannotDelete(TransferLabError):
    """A run that may not be deleted now (it is queued or running), with why in one line."""


@dataclass(frozen=True)
class Gone:
    """One thing a sweep deleted (or, in a dry run, would delete)."""

    name: str  # a run id, a data set's sha256, a file or folder name
    size: int  # bytes
    detail: str = ""  # what it was: "training · alice · finished 29 Oct 2026"


@dataclass
class Swept:
    """What a sweep deleted, or would have (``dry_run``)."""

    dry_run: bool = False
    runs: list[Gone] = field(default_factory=list)
    datasets: list[Gone] = field(default_factory=list)
    uploads: list[Gone] = field(default_factory=list)
    leftovers: list[Gone] = field(default_factory=list)  # trash, staging, temporary files, owners files
    races: list[Gone] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        return [gone.name for gone in self.runs]

    @property
    def digests(self) -> list[str]:
        return [gone.name for gone in self.datasets]

    def groups(self) -> dict[str, list[Gone]]:
        """Each kind of thing with what went, in the order a report lists them."""
        return {
            "runs": self.runs,
            "data sets": self.datasets,
            "uploads": self.uploads,
            "leftovers": self.leftovers,
            "races": self.races,
        }

    @property
    def size(self) -> int:
        return sum(gone.size for group in self.groups().values() for gone in group)


# ---------------------------------------------------------------------------- pins and expiry


def pin(run: Run) -> None:
    """Keep ``run`` until it is unpinned, whatever its age."""
    run.pin_file.touch()


def unpin(run: Run) -> None:
    run.pin_file.unlink(missing_ok=True)


def is_pinned(run: Run) -> bool:
    return run.pin_file.exists()


def expires_at(run: Run, limits: Limits, current: RunStatus | None = None) -> float | None:
    """When retention deletes ``run`` (epoch seconds): its finish plus ``keep_runs_days``; None
    when it is kept (no limit, pinned, or still queued or running). ``current`` is its status,
    when the caller has read it."""
    current = run.status() if current is None else current
    if limits.keep_runs_days is None or is_pinned(run) or current.state.active:
        return None
    return finished_at(run, current) + limits.keep_runs_days * DAY_S


def finished_at(run: Run, current: RunStatus) -> float:
    """When the run finished; a status without the time counts from its last change."""
    return float(current.finished or run.status_file.stat().st_mtime)


# ---------------------------------------------------------------------------- deleting


def delete(run: Run) -> int:
    """Delete a finished run now (the Admin page's button), pinned or not; returns its bytes.
    ``CannotDelete`` for a queued or running run: it must be cancelled first."""
    size = usage.folder_bytes(run.directory)
    with _kept(run) as keeper:
        if keeper is None or keeper.status.state.active:
            raise CannotDelete(f"run {run.id} is queued or running: cancel it first")
        trash = _to_trash(run.directory)
    shutil.rmtree(trash, ignore_errors=True)
    return size


def sweep(limits: Limits, now: float | None = None, dry_run: bool = False) -> Swept:
    """Delete what retention no longer keeps (see the module's docstring), or with ``dry_run``
    only say what that would be. Safe to run at any time, by several processes at once."""
    now = time.time() if now is None else now
    swept = Swept(dry_run=dry_run)
    for run in all_runs():
        expiry = expires_at(run, limits)
        if expiry is not None and expiry <= now:
            gone = Gone(run.id, usage.folder_bytes(run.directory), _run_detail(run))
            if dry_run or _delete_expired(run, limits, now):
                swept.runs.append(gone)
    kept = [run for run in all_runs() if run.id not in swept.run_ids]
    swept.datasets = _remove_all(_unneeded_datasets(kept, limits, now), dry_run)
    swept.uploads = _remove_all(_ended_uploads(kept, now), dry_run)
    swept.leftovers = _remove_all(_leftovers(now), dry_run)
    swept.races = _remove_all(_finished_races({run.id for run in kept}), dry_run)
    return swept


def sweep_if_due(limits: Limits, every_s: float = SWEEP_EVERY_S, now: float | None = None) -> Swept | None:
    """``sweep`` if none has started for ``every_s`` seconds (0: now), else None: what the app
    calls on its pages. The time of the last sweep is kept in the home folder, so every server
    process sharing it sweeps once an hour between them; one sweeping makes the others skip."""
    now = time.time() if now is None else now
    if not is_due(every_s, now):
        return None
    storage.home().mkdir(parents=True, exist_ok=True)
    fd = queue.try_lock(_sweep_file().with_suffix(".lock"))
    if fd is None:
        return None  # another process sweeps
    try:
        if not is_due(every_s, now):
            return None
        with contextlib.suppress(OSError):  # a full disk is when a sweep matters most
            storage.write_json(_sweep_file(), {"swept": now})
        return sweep(limits, now)
    finally:
        os.close(fd)


def is_due(every_s: float = SWEEP_EVERY_S, now: float | None = None) -> bool:
    """Whether no sweep has started for ``every_s`` seconds: one read of a small file."""
    return (time.time() if now is None else now) - _last_sweep() >= every_s


# ---------------------------------------------------------------------------- internals


def _sweep_file() -> Path:
    return storage.home() / "retention.json"


def _last_sweep() -> float:
    """When the app last swept; a damaged record counts as never: every page asks, and the
    sweep rewrites it."""
    stored = storage.read_record(_sweep_file(), {}, {"swept": storage.OPTIONAL_NUMBER})
    return float(stored.get("swept") or 0.0) if isinstance(stored, dict) else 0.0


@contextlib.contextmanager
def _kept(run: Run) -> Iterator[StatusKeeper | None]:
    """The run's keeper while it is held (None when its worker holds it): holding it, nothing
    can start or finish the run while we decide."""
    keeper = StatusKeeper.take(run)
    if keeper is None:
        yield None
        return
    with keeper:
        yield keeper


def _delete_expired(run: Run, limits: Limits, now: float) -> bool:
    """Delete ``run`` if it is still expired once we hold it (a pin or a worker may have come)."""
    with _kept(run) as keeper:
        expiry = None if keeper is None else expires_at(run, limits, keeper.status)
        if expiry is None or expiry > now:
            return False
        try:
            trash = _to_trash(run.directory)
        except OSError:
            return False  # the next sweep tries again; a page must not fail for it
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _to_trash(path: Path) -> Path:
    """Rename ``path`` to a hidden name beside it, in one step: from here on no reader finds it."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(3)}")
    os.rename(path, trash)
    return trash


def _remove_all(found: Iterable[tuple[Gone, list[Path]]], dry_run: bool) -> list[Gone]:
    """Remove each found thing's paths (folders through the trash), unless ``dry_run``; what went."""
    removed = []
    for gone, paths in found:
        try:
            if not dry_run:
                for path in paths:
                    _remove(path)
        except OSError:
            continue  # another process removed it first, or it cannot be: the next sweep tries
        removed.append(gone)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path if path.name.startswith(TRASH_PREFIX) else _to_trash(path))
    else:
        path.unlink(missing_ok=True)


def _run_detail(run: Run) -> str:
    current = run.status()
    finished = time.strftime("%d %b %Y", time.localtime(finished_at(run, current)))
    return f"{current.kind.label} · {run.record().owner} · finished {finished}"


def _unneeded_datasets(kept: list[Run], limits: Limits, now: float) -> Iterator[tuple[Gone, list[Path]]]:
    """Data sets whose owners' references have all lapsed and that no kept run uses; none while
    an active run has not yet said which data set it reads (it may be about to read any)."""
    if limits.keep_runs_days is None:
        return
    uses = [_uses(run) for run in kept]
    if any(use is None for use in uses):
        return  # the next sweep decides
    used = set().union(*uses)
    for digest, folder in usage.datasets():
        owners_file = usage.dataset_owners_file(digest)
        if _referenced(owners_file, folder, limits, now) or _in_use(digest, folder, used):
            continue
        detail = f"{_dataset_name(folder)} · {', '.join(usage.dataset_owners(digest))}"
        yield Gone(digest, usage.folder_bytes(folder), detail), [folder, owners_file]
    for owners_file in storage.datasets_dir().glob("*.owners.json"):
        digest = owners_file.name.removesuffix(".owners.json")
        orphan = not (storage.datasets_dir() / digest).exists() and not _upload_zip(digest).exists()
        if orphan and not _referenced(owners_file, None, limits, now):
            yield Gone(owners_file.name, owners_file.stat().st_size, "owners of no data set"), [owners_file]


def _uses(run: Run) -> set[str] | None:
    """What data a run reads: its plan's ``data`` path and, once recorded, its data set's sha256
    (the name of its folder under ``datasets/``: a zip's content, a server folder's listing);
    None for an active run that has recorded neither a data set folder nor its sha256 yet."""
    data = _normal(run.plan_fields().get("data"))
    digest = run.record().provenance.get("dataset_sha256")
    inside = data is not None and _inside(data, str(storage.datasets_dir()))
    if not digest and not inside and run.status().state.active:
        return None
    return {value for value in (data, digest) if value}


def _referenced(owners_file: Path, folder: Path | None, limits: Limits, now: float) -> bool:
    """Whether an owner's reference to the data set still holds (see the module's docstring); a
    data set from before owners were kept counts from when it was made."""
    references = access.owner_references(owners_file)
    if not references and folder is not None:
        references = {access.LOCAL_OWNER: (folder / "manifest.json").stat().st_mtime}
    keep_s = (limits.keep_runs_days or 0) * DAY_S
    return any(now - when < keep_s for when in references.values())


def _in_use(digest: str, folder: Path, used: set[str]) -> bool:
    """Whether a kept run reads this data set: by its sha256, or by a path in its folder."""
    return digest in used or any(_inside(path, str(folder)) for path in used)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _normal(path: object) -> str | None:
    return os.path.normpath(path) if isinstance(path, str) and path else None


def _dataset_name(folder: Path) -> str:
    source = (storage.read_json(folder / "manifest.json", {}) or {}).get("source") or {}
    return str(source.get("name") or folder.name)


def _upload_zip(digest: str) -> Path:
    return storage.uploads_dir() / f"{digest}.zip"


def _ended_uploads(kept: list[Run], now: float) -> Iterator[tuple[Gone, list[Path]]]:
    """Upload zips whose validation has ended (the worker deletes its zip; a killed one cannot),
    or that no validation job took up within ``UPLOAD_GRACE_S``. A zip written again after its
    last validation ended (the same content uploaded again) waits for its new job."""
    if not storage.uploads_dir().is_dir():
        return
    ended: dict[str, float | None] = {}  # zip -> when its last validation ended; None while one runs
    for run in kept:
        data = _normal(run.plan_fields().get("data"))
        if data and data.endswith(".zip"):
            current = run.status()
            end = None if current.state.active else finished_at(run, current)
            before = ended.get(data, 0.0)
            ended[data] = None if end is None or before is None else max(before, end)
    for path in storage.uploads_dir().glob("*.zip"):
        info, last = path.stat(), ended.get(os.path.normpath(path), 0.0)
        if last is not None and (info.st_mtime <= last or now - info.st_mtime > UPLOAD_GRACE_S):
            yield Gone(path.name, info.st_size, "its validation has ended"), [path]


def _leftovers(now: float) -> Iterator[tuple[Gone, list[Path]]]:
    """What interrupted work left: half-deleted trash (any age), and staging folders and
    temporary files older than ``LEFTOVER_AGE_S``."""
    patterns = {
        storage.runs_dir(): (f"{TRASH_PREFIX}*",),
        storage.datasets_dir(): (f"{TRASH_PREFIX}*", ".staging-*"),
        storage.uploads_dir(): (".*.tmp",),
    }
    for parent, globs in patterns.items():
        for pattern in globs:
            for path in parent.glob(pattern):
                old = now - path.lstat().st_mtime > LEFTOVER_AGE_S
                if pattern.startswith(TRASH_PREFIX) or old:
                    size = usage.folder_bytes(path) if path.is_dir() else path.lstat().st_size
                    yield Gone(f"{parent.name}/{path.name}", size, "left by interrupted work"), [path]


def _finished_races(kept_ids: set[str]) -> Iterator[tuple[Gone, list[Path]]]:
    """Race records none of whose runs is kept."""
    for path in storage.races_dir().glob("*.json"):
        lanes = (storage.read_json(path, {}) or {}).get("lanes") or []
        if not any(lane.get("run_id") in kept_ids for lane in lanes):
            yield Gone(path.stem, path.stat().st_size, "its runs are gone"), [path]
