"""The record of one validated upload, kept as ``manifest.json`` beside its images.

Everything the report and the splits need is here, so ingesting the same upload again (another
seed, another validation fraction) reads this file instead of unpacking and decoding again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.storage import write_text_atomic

VERSION = 1
FILENAME = "manifest.json"


@dataclass(frozen=True)
class Record:
    """One accepted image."""

    name: str  # its path inside the upload, as the user sees it
    path: str  # where it is on disk, relative to the dataset's root
    label: str
    split: str | None  # the upload's own split folder, None when it has none
    sha256: str  # of the file's bytes: exact duplicates share it
    width: int
    height: int
    mode: str
    format: str


@dataclass
class Manifest:
    source: dict[str, str]  # kind ("zip" | "folder"), name, sha256
    layout: str
    wrapper: str
    images: list[Record] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    ignored: dict[str, int] = field(default_factory=dict)  # reason -> files

    def save(self, folder: Path) -> None:
        data = {"version": VERSION, **asdict(self)}
        write_text_atomic(folder / FILENAME, json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        """The manifest in ``folder``, or ``None`` if it is missing, damaged or outdated."""
        try:
            data = json.loads((folder / FILENAME).read_text(encoding="utf-8"))
            if data.pop("version") != VERSION:
                return None
            return cls(
                source=data["source"],
                layout=data["layout"],
                wrapper=data["wrapper"],
                images=[Record(**record) for record in data["images"]],
                skipped=[(name, reason) for name, reason in data["skipped"]],
                ignored=data["ignored"],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
