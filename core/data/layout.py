"""Which class (and split) each file of an upload belongs to, from its path alone.

Understood: class folders at the root, the same under wrapper folders, and ``train/`` plus
``val/`` (or ``valid/``, ``validation/``) and ``test/`` splits that each hold class folders.
Operating-system clutter and non-image files are ignored and counted; archives inside the
upload are ignored too (we never unpack nested zips: each level would need its own limits).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from core.data.errors import IngestError
from core.data.images import IMAGE_EXTENSIONS

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
ARCHIVE_EXTENSIONS = frozenset({".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"})
OUTSIDE_CLASS = "not inside a class folder"
NESTED_ARCHIVE = "nested archive (not unpacked)"


@dataclass(frozen=True)
class Placed:
    """A candidate image: where it came from and what it is labelled."""

    index: int  # its position in the names given to :func:`place`
    name: str  # the path inside the upload, as the user sees it
    label: str  # the class folder
    split: str | None  # "train" | "val" | "test", or None when the upload has no splits


@dataclass
class Layout:
    kind: str  # "class folders" | "splits"
    wrapper: str  # folders stripped from the front of every path, "" for none
    placed: list[Placed] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    ignored: Counter[str] = field(default_factory=Counter)  # reason -> files


def ignore_reason(name: str) -> str | None:
    """Why a file is not a candidate image (``None`` when it is), by its path alone."""
    path = PurePosixPath(name)
    if "__MACOSX" in path.parts:
        return "__MACOSX"
    if path.name == ".DS_Store" or path.name.lower() in ("thumbs.db", "desktop.ini"):
        return path.name
    if any(part.startswith(".") for part in path.parts):
        return "hidden file"
    suffix = path.suffix.lower()
    if suffix in ARCHIVE_EXTENSIONS:
        return NESTED_ARCHIVE
    if suffix not in IMAGE_EXTENSIONS:
        return "not an image"
    return None


def place(names: list[str]) -> Layout:
    """Sort relative '/'-separated ``names`` into classes and splits, or refuse the layout."""
    candidates: list[tuple[str, ...]] = []
    indices: list[int] = []
    ignored: Counter[str] = Counter()
    for index, name in enumerate(names):
        reason = ignore_reason(name)
        if reason is None:
            # macOS zips spell accents decomposed; one class must not become two
            candidates.append(tuple(unicodedata.normalize("NFC", p) for p in name.split("/")))
            indices.append(index)
        else:
            ignored[reason] += 1
    if not candidates:
        found = ", ".join(f"{n} {reason}" for reason, n in ignored.most_common())
        raise IngestError(
            "no images found: expected class folders of "
            + "/".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
            + (f" files (found {found})" if found else " files")
        )
    wrapper, candidates = _strip_wrappers(candidates)
    splits = _split_folders(candidates)
    layout = Layout("splits" if splits else "class folders", "/".join(wrapper), ignored=ignored)
    depth = 2 if splits else 1  # path parts before the class folder's contents
    for index, parts in zip(indices, candidates):
        original = "/".join(wrapper + parts)
        if len(parts) <= depth:
            layout.skipped.append((original, OUTSIDE_CLASS))
        else:
            split = SPLIT_NAMES[parts[0].lower()] if splits else None
            layout.placed.append(Placed(index, original, parts[depth - 1], split))
    return layout


def _strip_wrappers(paths: list[tuple[str, ...]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Remove the folders that every path shares, stopping at a split folder, and keeping one
    level when all images sit in a single folder (that folder is a class, not a wrapper)."""
    folders = [p[:-1] for p in paths]
    wrapper: tuple[str, ...] = ()
    for parts in zip(*folders):
        if len(set(parts)) > 1 or parts[0].lower() in SPLIT_NAMES:
            break
        wrapper += (parts[0],)
    if wrapper and all(folder == wrapper for folder in folders):
        wrapper = wrapper[:-1]
    return wrapper, [p[len(wrapper) :] for p in paths]


def _split_folders(paths: list[tuple[str, ...]]) -> set[str]:
    """The split folders at the top, or an empty set for plain class folders."""
    top = {p[0] for p in paths if len(p) > 1}
    splits = {name for name in top if name.lower() in SPLIT_NAMES}
    if not splits:
        return set()
    others = sorted(top - splits)
    if others:
        raise IngestError(
            f"found split folders ({', '.join(sorted(splits))}) next to other folders "
            f"({', '.join(others[:5])}): put every class folder inside train/ and val/, or use no splits"
        )
    if "train" not in {SPLIT_NAMES[name.lower()] for name in splits}:
        raise IngestError(f"found {', '.join(sorted(splits))} but no train/ folder")
    return splits
