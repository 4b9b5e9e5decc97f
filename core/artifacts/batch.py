"""Many images at once: every image of a folder or a zip classified, as rows and as a CSV.

This is how a team checks a model on a batch of new images before using it. A zip passes the
same checks as an upload (entries, paths, sizes, bombs) and each image the same pixel budget,
but nothing is unpacked to disk: each image is read from the archive into memory, decoded and
classified, a batch at a time. An image that cannot be read becomes a row saying why.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from core.artifacts.predict import Predictor
from core.data.errors import IngestError
from core.data.images import IMAGE_EXTENSIONS, decode_image, read_header
from core.data.ingestion import pixel_budget
from core.data.zipsafe import check_sizes, checked_entries, open_zip
from core.inert import csv_cell
from core.limits import Limits

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Row:
    """One image's result: its top classes, or why it could not be read."""

    file: str
    top: tuple[tuple[str, float], ...] = ()
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        top = [{"label": label, "probability": round(p, 6)} for label, p in self.top]
        return {"file": self.file, "top": top} | ({"error": self.error} if self.error else {})


def predict_many(
    predictor: Predictor,
    source: str | Path | bytes,
    *,
    top_k: int = 3,
    batch_size: int = 32,
    progress: Progress | None = None,
    limits: Limits | None = None,
) -> list[Row]:
    """Classify every image in ``source`` (a folder, a .zip path or a zip's bytes), in name order.

    The images' pixels are counted from their headers before any is decoded, against the budget
    an upload of that size has (``ingestion.pixel_budget``): a tiny zip of huge flat images is
    refused whole, as ingestion refuses it, before it costs memory and minutes."""
    limits = limits or Limits()
    images, budget = _images(source, limits)
    _check_pixels(images, budget, limits)
    engine = predictor.engine(len(images))
    rows: list[Row] = []
    for start in range(0, len(images), batch_size):
        decoded, names = [], []
        for name, read in images[start : start + batch_size]:
            try:
                decoded.append(decode_image(read(), max_pixels=limits.max_image_pixels))
                names.append(name)
            except (IngestError, OSError) as exc:
                rows.append(Row(name, error=f"cannot read image: {exc}"))
        predictions = predictor.predict(decoded, top_k, batch_size, engine) if decoded else []
        rows += [Row(name, p.top) for name, p in zip(names, predictions, strict=True)]
        if progress:
            progress(min(start + batch_size, len(images)), len(images))
    return sorted(rows, key=lambda row: row.file)


def rows_from_dicts(items: list[dict[str, Any]]) -> list[Row]:
    """Rows back from what ``Row.to_dict`` wrote (a batch job's ``result.json``)."""
    return [
        Row(item["file"], tuple((t["label"], t["probability"]) for t in item["top"]), item.get("error", ""))
        for item in items
    ]


def to_csv(rows: list[Row], top_k: int = 3) -> str:
    """``file, predicted, confidence, class 2, p 2 ..., error``: one line per image. File and
    class names came from users: each is a cell a spreadsheet shows, never runs (``inert.csv_cell``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["file", "predicted", "confidence"]
    for rank in range(2, top_k + 1):
        header += [f"class {rank}", f"confidence {rank}"]
    writer.writerow([*header, "error"])
    for row in rows:
        cells: list[object] = [csv_cell(row.file)]
        for rank in range(top_k):
            label, p = row.top[rank] if rank < len(row.top) else ("", "")
            cells += [csv_cell(label), f"{p:.4f}" if p != "" else ""]
        writer.writerow([*cells, csv_cell(row.error)])
    return out.getvalue()


def _images(source: str | Path | bytes, limits: Limits) -> tuple[list[tuple[str, Callable[[], bytes]]], int]:
    """(name, a reader of its bytes) for each image file, in name order, and the pixels they
    may hold in all: a zip's budget follows its size, a folder's is the absolute cap."""
    if isinstance(source, (bytes, bytearray)):
        return list(_zip_images(io.BytesIO(source), len(source), limits)), pixel_budget(len(source), limits)
    path = Path(source)
    if path.is_dir():
        return list(_folder_images(path, limits)), pixel_budget(None, limits)
    if path.is_file():
        size = path.stat().st_size
        with open(path, "rb") as fp:
            return list(_zip_images(io.BytesIO(fp.read()), size, limits)), pixel_budget(size, limits)
    raise IngestError(f"no such file or folder: {str(path)!r}")


def _check_pixels(images: list[tuple[str, Callable[[], bytes]]], budget: int, limits: Limits) -> None:
    """``IngestError`` when the images' headers promise more pixels than ``budget``; an image
    whose header cannot be read is left to its own row."""
    pixels = 0
    for name, read in images:
        try:
            info = read_header(read(), max_pixels=limits.max_image_pixels)
        except IngestError:
            continue
        pixels += info.width * info.height
        if pixels > budget:
            raise IngestError(
                f"the images hold more than {budget:,} pixels ({name!r} passes the mark), the limit for "
                f"this zip: {limits.max_pixels_per_mb:,} per MiB of archive, {limits.max_total_pixels:,} in all"
            )


def _zip_images(fp: BinaryIO, size: int, limits: Limits) -> Iterator[tuple[str, Callable[[], bytes]]]:
    archive = open_zip(fp, limits)
    entries = [e for e in checked_entries(archive, limits) if _is_image(e.name)]
    check_sizes(entries, limits, size)
    if not entries:
        raise IngestError("the zip holds no images (" + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")")
    for entry in sorted(entries, key=lambda e: e.name):
        yield entry.name, lambda info=entry.info: archive.read(info)


def _folder_images(folder: Path, limits: Limits) -> Iterator[tuple[str, Callable[[], bytes]]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not Path(dirpath, d).is_symlink()
        )
        for filename in filenames:
            path = Path(dirpath, filename)
            if _is_image(filename) and not path.is_symlink():
                found.append(path)
            if len(found) > limits.max_entries:
                raise IngestError(f"the folder has more than {limits.max_entries:,} images")
    if not found:
        raise IngestError(f"no images in {folder}")
    for path in sorted(found):
        yield path.relative_to(folder).as_posix(), path.read_bytes


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS and not Path(name).name.startswith(".")
