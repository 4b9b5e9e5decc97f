"""A data set's preview: a few small pictures of each class, made once where the data is validated.

Decoding a 49-megapixel image for a 96-pixel preview takes a quarter of a second, and the Train
page runs again on every click. So ingestion (for an upload: in its validation job, never in the
web server) writes the previews once, as small JPEGs in the data set's ``previews/`` folder with
an index, and the page hands those files on as they are (Streamlit passes a JPEG no wider than
shown through untouched; it would decode and re-encode any other).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.data.errors import IngestError
from core.data.images import thumbnail
from core.data.manifest import Record
from core.storage import read_json, write_json

# A row of examples per class while there are few classes, one example each beyond.
GRID_CLASSES, GRID_IMAGES = 8, 6
SIZE = 96  # pixels a side at most: the width the page shows them at
JPEG_QUALITY = 90
FOLDER = "previews"
INDEX = "index.json"


@dataclass(frozen=True)
class ClassPreview:
    """One class's label and its preview files, in the order they are shown."""

    label: str
    files: tuple[Path, ...]


def write_previews(images_root: Path, records: Sequence[Record], work: Path) -> None:
    """Make the previews of the accepted images ``records`` (paths relative to ``images_root``)
    into ``work/previews/``: the first images of each class by name."""
    by_class: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)
    per_class = GRID_IMAGES if len(by_class) <= GRID_CLASSES else 1
    folder = work / FOLDER
    folder.mkdir(exist_ok=True)
    index = []
    for number, label in enumerate(sorted(by_class)):
        picked = sorted(by_class[label], key=lambda r: r.name)[:per_class]
        files = []
        for position, record in enumerate(picked):
            try:
                image = thumbnail(images_root / record.path, SIZE)
            except IngestError:
                continue  # validated a moment ago: only a file changed since can fail
            name = f"{number:05d}-{position}.jpg"
            image.save(folder / name, "JPEG", quality=JPEG_QUALITY)
            files.append(name)
        index.append({"label": label, "files": files})
    write_json(folder / INDEX, index)


def stored_previews(work: Path) -> list[ClassPreview] | None:
    """The previews written for the data set kept at ``work``; None for a data set validated
    before previews were kept."""
    folder = work / FOLDER
    index = read_json(folder / INDEX)
    if not isinstance(index, list):
        return None
    return [ClassPreview(entry["label"], tuple(folder / name for name in entry["files"])) for entry in index]
