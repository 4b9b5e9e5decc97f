"""Where Transfer Lab keeps what it writes, and how it writes it.

Everything lives under one home folder (``TRANSFER_LAB_HOME``): validated uploads in
``datasets/``, runs in ``runs/``, the job queue in ``queue/``. Files that others read while they
change are replaced atomically (write a temporary file beside, then rename), so a reader sees
the old file or the new one, never half of one. This module is the bottom layer: it imports
nothing of ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The app's own files (its samples, its pyproject.toml), as opposed to what it writes.
CODE_ROOT = Path(__file__).resolve().parent.parent
HOME_ENV = "TRANSFER_LAB_HOME"
DEFAULT_HOME = "~/.transfer_lab"
DATA_ROOT_ENV = "TRANSFER_LAB_DATA_ROOT"  # set it to let people train on folders under it


def home() -> Path:
    """The root of all app storage, absolute (workers run elsewhere); tests point
    ``TRANSFER_LAB_HOME`` at a temp dir."""
    return Path(os.environ.get(HOME_ENV, DEFAULT_HOME)).expanduser().resolve()


def datasets_dir() -> Path:
    """Validated, extracted uploads: ``datasets/<sha256-of-upload>/``."""
    return home() / "datasets"


def runs_dir() -> Path:
    """One folder per training run: ``runs/<run-id>/``."""
    return home() / "runs"


def data_root() -> Path | None:
    """The folder whose subfolders people may train on in place (``TRANSFER_LAB_DATA_ROOT``),
    absolute; None when unset. A root that holds the home folder, or lies inside it, is refused
    with ``ValueError``: "a folder under the root" would then open every owner's uploads and
    runs to anyone who types its path."""
    raw = os.environ.get(DATA_ROOT_ENV, "").strip()
    if not raw:
        return None
    root = Path(raw).expanduser().resolve()
    if home().is_relative_to(root) or root.is_relative_to(home()):
        raise ValueError(
            f"{DATA_ROOT_ENV}={raw!r} overlaps {HOME_ENV} ({home()}): people could open another "
            f"owner's uploads and runs by path; point {DATA_ROOT_ENV} at a folder of data sets "
            "beside the home folder, neither above nor inside it"
        )
    return root


def cache_dir() -> Path:
    """What the app computes once and can compute again (the backbone catalog, compilers' caches)."""
    return home() / "cache"


def keep_caches_home() -> None:
    """Point the caches that torch's compilers write (the exporter uses inductor's) under the
    home folder, unless the operator chose a place: by default they land in the system's temp
    directory, and nothing of ours may be written outside the home folder. For processes that
    train or export (the CLI, the worker), before they compile anything."""
    cache = cache_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "torchinductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))


def uploads_dir() -> Path:
    """Uploaded zips, kept only until their validation job has unpacked them."""
    return home() / "uploads"


def races_dir() -> Path:
    """One record per race of the cases: which runs race, on what data."""
    return home() / "races"


def queue_dir() -> Path:
    """Tickets and slot locks of the local job queue."""
    return home() / "queue"


@dataclass(frozen=True)
class RunFiles:
    """The layout of one run directory: every file a run keeps, named in one place.

    Training writes the metrics and the model here; the jobs layer reads the rest through its
    run handle, which is a ``RunFiles`` with reading methods.
    """

    directory: Path

    @property
    def plan_file(self) -> Path:
        return self.directory / "plan.json"

    @property
    def status_file(self) -> Path:
        return self.directory / "status.json"

    @property
    def record_file(self) -> Path:
        """Who started the run, on what, with which versions: the run record."""
        return self.directory / "run.json"

    @property
    def events_file(self) -> Path:
        return self.directory / "events.jsonl"

    @property
    def metrics_file(self) -> Path:
        return self.directory / "metrics.json"

    @property
    def result_file(self) -> Path:
        """What a job other than training produced (a validated data set's folder)."""
        return self.directory / "result.json"

    @property
    def suspects_file(self) -> Path:
        """Training images that look mislabelled (``core.training.suspects``)."""
        return self.directory / "suspects.json"

    @property
    def model_dir(self) -> Path:
        """``model.pt2``, ``labels.json`` and ``preprocess.json``: what a user downloads."""
        return self.directory / "model"

    @property
    def log_file(self) -> Path:
        """The worker's stdout and stderr: tracebacks live here, not in the status."""
        return self.directory / "worker.log"

    @property
    def lock_file(self) -> Path:
        """Held by the process that runs the run for as long as it lives."""
        return self.directory / "worker.lock"

    @property
    def cancel_file(self) -> Path:
        return self.directory / "cancel.requested"

    @property
    def pin_file(self) -> Path:
        """Present while an admin has pinned the run: retention never deletes it."""
        return self.directory / "pinned"

    @property
    def exit_file(self) -> Path:
        """How the worker process ended (its pid and exit status), written by the process that
        started it and reaped it: a worker killed outright cannot say so itself."""
        return self.directory / "exit.json"


def _umask() -> int:
    """The process's umask. Read once, at import, before any thread exists (reading the umask
    means setting it for a moment)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


# The modes a plain ``open`` and ``mkdir`` give a new file and folder.
_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (made if missing) for the block: one process at
    a time, whichever server or worker it is; the kernel lets go if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Atomically replace ``path`` with ``data`` as JSON (no NaN: browsers reject it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False))


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) so that readers see the old file or the new one,
    never half of one: write a temporary file beside it, then rename it over ``path``."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` as ``write_text_atomic`` does: whole, or not at all."""
    with naming_errors(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the run's other files follow the umask, and under
        # another uid (a cluster node's worker) the app could not read the run it wrote.
        os.fchmod(fd, FILE_MODE)
        with naming_errors(path), os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def naming_errors(path: Path) -> Iterator[None]:
    """Name ``path`` in an ``OSError`` from the block that names no file: a write that fails
    because the disk is full says ``No space left on device`` and nothing else, and the person
    who must free space needs to know which disk."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A fresh folder beside ``final`` that replaces it only if the block succeeds: a reader
    sees the old folder or the whole new one, and a failed write (a full disk) leaves neither
    half of one nor the staging folder."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with naming_errors(final.parent):
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        try:
            yield staging
        except OSError as exc:  # named as the folder it was to become: the staging one is gone
            if isinstance(exc.filename, str) and exc.filename.startswith(str(staging)):
                exc.filename = str(final) + exc.filename[len(str(staging)) :]
            raise
        os.chmod(staging, DIR_MODE)  # mkdtemp's folder is private, as mkstemp's file is
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when there is no such file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


@dataclass(frozen=True)
class Damaged:
    """A record file that is there but cannot be read as one (truncated, not JSON, the wrong
    shape): what a tolerant reader returns instead of raising, so that one damaged run is shown
    as damaged, saying ``problem``, rather than breaking every page that lists runs."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.problem}"


# The JSON types a record's field may hold, for ``read_record``'s ``fields``.
NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))
OPTIONAL_STR = (str, type(None))


def read_record(
    path: Path, default: Any = None, fields: Mapping[str, type | tuple[type, ...]] | None = None
) -> Any:
    """The JSON object in ``path``; ``default`` when there is no such file; ``Damaged`` when the
    file holds anything but a JSON object, or one whose ``fields`` (name: the types it may hold)
    are of another type. Anyone can damage a run's files (a hand edit, a copy cut short, a
    version that wrote them otherwise), and readers must carry on; fields not named are not
    checked, and a field may be missing."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return default
    except OSError as exc:  # a folder in its place, no permission
        return Damaged(path, f"unreadable ({exc.strerror or exc})")
    except ValueError as exc:  # not JSON (cut short), not UTF-8
        return Damaged(path, f"not valid JSON ({' '.join(str(exc).split())})")
    if not isinstance(data, dict):
        return Damaged(path, f"a JSON {type(data).__name__}, not an object")
    for name, types in (fields or {}).items():
        if name in data and not isinstance(data[name], types):
            allowed = [kind.__name__ for kind in (types if isinstance(types, tuple) else (types,))]
            expected = " or ".join(word for word in allowed if word != "NoneType")
            return Damaged(path, f"{name} is a {type(data[name]).__name__}, expected {expected}")
    return data
