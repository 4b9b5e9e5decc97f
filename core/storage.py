"""Where Transfer Lab keeps what it writes, and how it writes it.

Everything lives under one home folder (``TRANSFER_LAB_HOME``): validated uploads in
``datasets/``, runs in ``runs/``, the job queue in ``queue/``. Files that others read while they
change are replaced atomically (write a temporary file beside, then rename), so a reader sees
the old file or the new one, never half of one. This module is the bottom layer: it imports
nothing of ours.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The app's own files (its samples, its pyproject.toml), as opposed to what it writes.
CODE_ROOT = Path(__file__).resolve().parent.parent
HOME_ENV = "TRANSFER_LAB_HOME"
DEFAULT_HOME = "~/.transfer_lab"


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


def keep_caches_home() -> None:
    """Point the caches that torch's compilers write (the exporter uses inductor's) under the
    home folder, unless the operator chose a place: by default they land in the system's temp
    directory, and nothing of ours may be written outside the home folder. For processes that
    train or export (the CLI, the worker), before they compile anything."""
    cache = home() / "cache"
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


def _file_mode() -> int:
    """The mode a plain ``open`` gives a new file: 0666 less the process's umask. Read once, at
    import, before any thread exists (reading the umask means setting it for a moment)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the run's other files follow the umask, and under
        # another uid (a cluster node's worker) the app could not read the run it wrote.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when there is no such file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default
