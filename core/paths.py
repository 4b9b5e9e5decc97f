"""Where Transfer Lab keeps what it writes: everything lives under one home folder."""

from __future__ import annotations

import os
from pathlib import Path

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
