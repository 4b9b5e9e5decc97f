"""Turn an uploaded zip (or a folder on the server) into a validated dataset, or refuse it.

An upload is unpacked into a staging folder under ``datasets/`` and renamed to
``datasets/<sha256 of the upload>/`` only once every check has passed, so a refusal or a crash
leaves nothing behind and a second upload of the same bytes is not unpacked again.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

from core import storage
from core.data import decode, zipsafe
from core.data.errors import IngestError
from core.data.images import ImageInfo, read_header
from core.data.layout import Layout, Placed, place
from core.data.manifest import Manifest, Record
from core.data.preview import write_previews
from core.data.report import DatasetReport, build_report
from core.errors import disk_full, is_disk_full
from core.limits import Limits
from core.storage import naming_errors, write_text_atomic

Progress = Callable[[int, int], None]  # (files decided, files to decide)
REPORT_FILENAME = "report.json"
SYMLINK = "symbolic link (not followed)"
# Validation needs a full decode (truncation only shows at the end), not full resolution.
VALIDATION_DRAFT = (1, 1)
STALE_STAGING_S = 24 * 3600


@dataclass(frozen=True)
class Sample:
    path: Path  # the validated image file on disk
    label: int  # index into Dataset.classes
    name: str = ""  # the file's path inside the upload, for showing to people


@dataclass
class Dataset:
    root: Path  # datasets/<sha256>/ for uploads, the folder itself for server folders
    classes: list[str]  # sorted class names
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]  # empty when the data had none; evaluate on it only at the end
    report: DatasetReport
    cache_dir: Path | None = None  # where an ImageCache may keep its disk-backed arrays
    work: Path | None = None  # datasets/<...>/: its manifest, report and previews (core.data.preview)


def ingest(
    source: str | Path | bytes,
    *,
    limits: Limits | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    progress: Progress | None = None,
    exclude: Collection[str] = (),
) -> Dataset:
    """Validate ``source`` (a .zip path, a zip's bytes, or a folder on the server) as a dataset.

    The ``datasets/<sha256>/`` folder of an earlier upload names that upload again, without its
    bytes: that is how a training worker finds what a page ingested.

    Raises :class:`IngestError` with a one-line reason for anything refused. ``val_fraction`` and
    ``seed`` make the stratified validation split when the data has no ``val/`` folder; ``name``
    labels an upload given as bytes in the report. ``exclude`` names images (as the upload names
    them) to leave out of every split, after splitting: the rest keep the split they had, so runs
    with and without them compare on the same validation images less the excluded ones.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    limits = limits or Limits()
    try:
        if isinstance(source, (bytes, bytearray)):
            digest = hashlib.sha256(source).hexdigest()
            root, work, manifest = _from_zip(io.BytesIO(source), digest, name or "upload", limits, progress)
        else:
            path = Path(source)
            stored = _stored_upload(path)
            if stored is not None:
                root, work, manifest = path.resolve(), path.resolve(), stored
            elif path.is_dir():
                root, work, manifest = _from_folder(path.resolve(), limits, progress)
            elif path.is_file():
                with open(path, "rb") as fp:
                    digest = _file_sha256(fp)
                    root, work, manifest = _from_zip(fp, digest, name or path.name, limits, progress)
            else:
                raise IngestError(f"no such file or folder: {str(path)!r}")
        return _dataset(root, work, manifest, val_fraction, seed, exclude)
    except OSError as exc:
        if is_disk_full(exc):
            raise IngestError(disk_full(exc)) from None
        raise IngestError(f"could not read or store the data: {exc.strerror or exc}") from None


def stored_dataset(source: str | Path, *, val_fraction: float = 0.2, seed: int = 0) -> Dataset | None:
    """``source`` as ``ingest`` gives it, if it was validated before (and has not changed since),
    else ``None``. It reads the stored manifest and never decodes an image: the web server calls
    this, and leaves validating to a job."""
    found = _validated(Path(source))
    return None if found is None else _dataset(*found, val_fraction, seed)


def stored_images(source: str | Path) -> dict[str, Path]:
    """Where each image of an already validated ``source`` lives, by the name people see; empty
    when it was never validated (or has changed since). Never decodes an image."""
    found = _validated(Path(source))
    if found is None:
        return {}
    root, _, manifest = found
    return {record.name: root / record.path for record in manifest.images}


def _validated(path: Path) -> tuple[Path, Path, Manifest] | None:
    """The root, work folder and manifest of a source validated before, found by content (a
    zip's hash, a folder's listing), or ``None``."""
    try:
        if (manifest := _stored_upload(path)) is not None:
            return path.resolve(), path.resolve(), manifest
        if path.is_file():
            with open(path, "rb") as fp:
                work = storage.datasets_dir() / _file_sha256(fp)
            root = work
        elif path.is_dir():
            root = path.resolve()
            work = storage.datasets_dir() / _scan(root, Limits())[3]
        else:
            return None
        manifest = Manifest.load(work)
    except (OSError, IngestError):
        return None
    return None if manifest is None else (root, work, manifest)


def _stored_upload(path: Path) -> Manifest | None:
    """The manifest of an upload already unpacked to ``datasets/<sha256>/``, so that a plan can
    name the upload by that folder (a worker has no copy of the uploaded bytes)."""
    try:
        inside = path.resolve().parent == storage.datasets_dir()
    except OSError:
        return None
    return Manifest.load(path) if inside and path.is_dir() else None


def _from_zip(
    fp: BinaryIO, digest: str, name: str, limits: Limits, progress: Progress | None
) -> tuple[Path, Path, Manifest]:
    root = storage.datasets_dir() / digest
    manifest = Manifest.load(root)
    if manifest is None:
        with _staged(root) as staging:
            manifest = _unpack(fp, staging, {"kind": "zip", "name": name, "sha256": digest}, limits, progress)
    return root, root, manifest


def _unpack(
    fp: BinaryIO, staging: Path, source: dict[str, str], limits: Limits, progress: Progress | None
) -> Manifest:
    archive_bytes = fp.seek(0, os.SEEK_END)
    fp.seek(0)
    with zipsafe.open_zip(fp, limits) as archive:
        entries = zipsafe.checked_entries(archive, limits)
        layout = place([entry.name for entry in entries])
        _check_class_count(layout, limits)
        zipsafe.check_sizes([entries[placed.index] for placed in layout.placed], limits, archive_bytes)
        manifest = _empty_manifest(source, layout)
        images = staging / "images"
        images.mkdir()
        budget = limits.max_total_bytes
        with _Admission(
            manifest, limits, pixel_budget(archive_bytes, limits), len(layout.placed), progress
        ) as admission:
            for number, placed in enumerate(layout.placed):
                entry = entries[placed.index]
                dest = images / f"{number:06d}-{_safe_filename(entry.name)}"
                try:
                    written, digest = zipsafe.extract(archive, entry, dest, budget)
                except zipsafe.DamagedEntry as exc:
                    admission.skip(placed.name, str(exc))
                    continue
                budget -= written
                admission.consider(placed, dest, dest.relative_to(staging), digest)
            for refused in admission.finish():
                refused.unlink()
    _check_classes(manifest)
    write_previews(staging, manifest.images, staging)
    manifest.save(staging)
    return manifest


def _from_folder(folder: Path, limits: Limits, progress: Progress | None) -> tuple[Path, Path, Manifest]:
    """Validate a server folder in place; its manifest lives under ``datasets/`` keyed by the
    folder's path and listing, so an unchanged folder is not decoded twice."""
    names, symlinks, hidden, fingerprint = _scan(folder, limits)
    work = storage.datasets_dir() / fingerprint
    manifest = Manifest.load(work)
    if manifest is None:
        with _staged(work) as staging:
            layout = place(names)
            _check_class_count(layout, limits)
            layout.skipped.extend((link, SYMLINK) for link in symlinks)
            layout.ignored["hidden folder"] += hidden
            manifest = _empty_manifest({"kind": "folder", "name": str(folder), "sha256": fingerprint}, layout)
            with _Admission(
                manifest, limits, pixel_budget(None, limits), len(layout.placed), progress
            ) as admission:
                for placed in layout.placed:
                    relative = names[placed.index]
                    try:
                        with open(folder / relative, "rb") as fp:
                            digest = _file_sha256(fp)
                    except OSError as exc:
                        admission.skip(placed.name, f"unreadable ({exc.strerror or exc})")
                        continue
                    admission.consider(placed, folder / relative, Path(relative), digest)
                admission.finish()
            _check_classes(manifest)
            write_previews(folder, manifest.images, staging)
            manifest.save(staging)
    return folder, work, manifest


def _scan(folder: Path, limits: Limits) -> tuple[list[str], list[str], int, str]:
    """Relative file names, symlinks skipped, hidden folders pruned, and a fingerprint of the
    listing (names, sizes, modification times)."""
    names: list[str] = []
    symlinks: list[str] = []
    hidden = 0
    listing = hashlib.sha256(f"folder\0{folder}\0".encode())
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        relative_dir = here.relative_to(folder)
        kept = []
        for dirname in sorted(dirnames):
            if (here / dirname).is_symlink():
                symlinks.append((relative_dir / dirname).as_posix())
            elif dirname.startswith("."):
                hidden += 1
            else:
                kept.append(dirname)
        dirnames[:] = kept
        for filename in sorted(filenames):
            relative = (relative_dir / filename).as_posix()
            if (here / filename).is_symlink():
                symlinks.append(relative)
                continue
            names.append(relative)
            if len(names) > limits.max_entries:
                raise IngestError(f"the folder has more than {limits.max_entries:,} files, the limit")
            status = (here / filename).stat()
            listing.update(f"{relative}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return names, symlinks, hidden, listing.hexdigest()


def _empty_manifest(source: dict[str, str], layout: Layout) -> Manifest:
    return Manifest(
        source=source,
        layout=layout.kind,
        wrapper=layout.wrapper,
        skipped=list(layout.skipped),
        ignored=dict(layout.ignored),
    )


class _Admission:
    """Decides each file of a data set: an image to record, or a file to skip with its reason.

    Every image's header is read before its pixels are decoded, and charged to the data set's
    pixel budget: a few KB of one-bit PNG can claim 50 megapixels, and decoding is what costs.
    Over budget, the whole data set is refused. The headers are read here, in the order of the
    files; the full decodes run in :mod:`core.data.decode`'s workers while later files are still
    being unpacked, and :meth:`finish` records every file in its order. A content seen before
    is decided once. ``progress(done, total)`` counts the files decided.
    """

    def __init__(
        self, manifest: Manifest, limits: Limits, pixel_budget: int, total: int, progress: Progress | None
    ) -> None:
        self.manifest, self.limits, self.budget = manifest, limits, pixel_budget
        self.pixels = 0
        self._total, self._done, self._progress = total, 0, progress
        self._files: list[tuple[Placed, Path, Path, str] | tuple[str, str]] = []  # in order; pairs: skipped
        # sha256 -> the decision on that content: the image it is, why it is skipped, or None while decoding
        self._decisions: dict[str, ImageInfo | str | None] = {}
        self._waiting: Counter[str] = Counter()  # files whose content is still decoding, by sha256
        self._decoding: list[str] = []  # the sha256 of each file handed to the pool, in that order
        check = decode.Check(limits.max_image_pixels, VALIDATION_DRAFT)
        self._pool = decode.Pool(check, decode.workers_for(total, check.ITEM_S), self._decoded)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.__exit__(*exc_info)

    def skip(self, name: str, reason: str) -> None:
        """Skip a file that never got as far as its header (a damaged or unreadable entry)."""
        self._files.append((name, reason))
        self._advance(1)

    def consider(self, placed: Placed, file: Path, relative: Path, digest: str) -> None:
        """Read ``file``'s header now, charging its pixels; decode it (unless seen) in the pool."""
        self._files.append((placed, file, relative, digest))
        if digest in self._decisions:
            if self._decisions[digest] is None:
                self._waiting[digest] += 1
            else:
                self._advance(1)
            return
        try:
            header = read_header(file, max_pixels=self.limits.max_image_pixels)
        except IngestError as exc:
            self._decisions[digest] = str(exc)
            self._advance(1)
            return
        self._charge(header.width * header.height, placed.name)
        self._decisions[digest], self._waiting[digest] = None, 1
        self._decoding.append(digest)
        self._pool.put(str(file))

    def finish(self) -> list[Path]:
        """Wait for the decodes, record every file in its order; the files skipped, to delete."""
        self._pool.join()
        skipped = []
        for decided in self._files:
            if len(decided) == 2:
                self.manifest.skipped.append(decided)
                continue
            placed, file, relative, digest = decided
            decision = self._decisions[digest]
            if isinstance(decision, ImageInfo):
                where = (placed.name, relative.as_posix(), placed.label, placed.split, digest)
                self.manifest.images.append(
                    Record(*where, decision.width, decision.height, decision.mode, decision.format)
                )
            else:
                self.manifest.skipped.append((placed.name, decision))
                skipped.append(file)
        return skipped

    def _decoded(self, results: decode.Results) -> None:
        for index, result in results:
            digest = self._decoding[index]
            self._decisions[digest] = result if isinstance(result, str) else ImageInfo(*result)
            self._advance(self._waiting.pop(digest))

    def _advance(self, files: int) -> None:
        self._done += files
        if self._progress:
            self._progress(self._done, self._total)

    def _charge(self, pixels: int, name: str) -> None:
        self.pixels += pixels
        if self.pixels > self.budget:
            raise IngestError(
                f"the images hold more than {self.budget:,} pixels ({name!r} passes the mark), the limit "
                f"for this upload: {self.limits.max_pixels_per_mb:,} per MiB of archive, "
                f"{self.limits.max_total_pixels:,} in all"
            )


def pixel_budget(archive_bytes: int | None, limits: Limits) -> int:
    """The pixels an upload of ``archive_bytes`` may decode (None: a server folder, the absolute cap)."""
    if archive_bytes is None:
        return limits.max_total_pixels
    by_size = int(archive_bytes / (1 << 20) * limits.max_pixels_per_mb)
    return min(limits.max_total_pixels, max(limits.min_pixel_budget, by_size))


def _check_class_count(layout: Layout, limits: Limits) -> None:
    """Refuse more class folders than the limit, before anything is extracted or decoded."""
    classes = len({placed.label for placed in layout.placed})
    if classes > limits.max_classes:
        raise IngestError(
            f"the data has {classes:,} class folders; the limit is {limits.max_classes:,} "
            "(is a folder of images one level too deep?)"
        )


def _check_classes(manifest: Manifest) -> None:
    """Refuse data that cannot train a classifier, naming the class at fault."""
    records = manifest.images
    if not records:
        examples = "; ".join(f"{name!r}: {reason}" for name, reason in manifest.skipped[:2])
        raise IngestError(f"no readable images ({len(manifest.skipped)} skipped, e.g. {examples})")
    in_train = {r.label for r in records if r.split in (None, "train")}
    for record in records:
        if record.label not in in_train:
            raise IngestError(f"class {record.label!r} has images in {record.split}/ but none in train/")
    labels = sorted({r.label for r in records})
    if len(labels) < 2:
        raise IngestError(f"only one class ({labels[0]!r}): a classifier needs at least 2 class folders")
    usable = Counter(r.label for r in records if r.split != "test")
    for label in labels:
        if usable[label] < 2:
            raise IngestError(
                f"class {label!r} has {usable[label]} usable image(s) outside test/; "
                "each class needs at least 2"
            )


def _dataset(
    root: Path, work: Path, manifest: Manifest, val_fraction: float, seed: int, exclude: Collection[str] = ()
) -> Dataset:
    classes = sorted({r.label for r in manifest.images})
    splits, how, held_out = _assign(manifest.images, val_fraction, seed)
    if exclude:
        kept = _without(splits, set(exclude))
        dropped = sum(map(len, splits.values())) - sum(map(len, kept.values()))
        splits, how = kept, f"{how}; {dropped} file(s) excluded by the plan"
    report = build_report(manifest, splits, classes, how, held_out_val=held_out)
    write_text_atomic(work / REPORT_FILENAME, report.to_json())
    index = {label: i for i, label in enumerate(classes)}

    def samples(records: list[Record]) -> list[Sample]:
        ordered = sorted(records, key=lambda r: (index[r.label], r.name))
        return [Sample(root / r.path, index[r.label], r.name) for r in ordered]

    return Dataset(
        root,
        classes,
        samples(splits["train"]),
        samples(splits["val"]),
        samples(splits["test"]),
        report,
        cache_dir=work / "cache",
        work=work,
    )


def _without(splits: dict[str, list[Record]], excluded: set[str]) -> dict[str, list[Record]]:
    return {split: [r for r in records if r.name not in excluded] for split, records in splits.items()}


def _assign(
    records: list[Record], val_fraction: float, seed: int
) -> tuple[dict[str, list[Record]], str, bool]:
    """Train/val/test lists: the upload's own folders where it has a val/, else a stratified split;
    how, in words; and whether we held the validation images out."""
    test = [r for r in records if r.split == "test"]
    pool = [r for r in records if r.split in (None, "train")]
    given_val = [r for r in records if r.split == "val"]
    if given_val:
        return (
            {"train": pool, "val": given_val, "test": test},
            "the upload's own train/ and val/ folders",
            False,
        )
    train, val = _stratified(pool, val_fraction, seed)
    how = f"stratified: {val_fraction:.0%} of each class held out for validation (seed {seed})"
    return {"train": train, "val": val, "test": test}, how, True


def _stratified(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Hold out ``fraction`` of each class (at least one image, never all of them). Identical
    files move together, so our own split never leaks a copy of a training image into val."""
    rng = random.Random(seed)
    by_label: defaultdict[str, defaultdict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in sorted(records, key=lambda r: r.name):
        by_label[record.label][record.sha256].append(record)
    train: list[Record] = []
    val: list[Record] = []
    for label in sorted(by_label):
        groups = list(by_label[label].values())
        total = sum(len(group) for group in groups)
        target = min(total - 1, max(1, round(total * fraction)))
        rng.shuffle(groups)
        held = 0
        for group in groups:
            if held + len(group) <= target:
                val.extend(group)
                held += len(group)
            else:
                train.extend(group)
    return train, val


@contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A fresh folder that becomes ``final`` only if the block succeeds, so a refused or failed
    ingestion leaves nothing behind and no reader ever sees half a dataset."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_staging(final.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{final.name[:16]}-", dir=final.parent))
    try:
        with naming_errors(final):  # a full disk names the data set it could not write
            yield staging
        if final.exists() and Manifest.load(final) is None:  # left by an older version
            stale = staging.with_name(staging.name + "-stale")
            os.rename(final, stale)
            shutil.rmtree(stale)
        try:
            os.rename(staging, final)
        except OSError:
            if Manifest.load(final) is None:  # not a twin ingestion that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sweep_stale_staging(parent: Path) -> None:
    """Remove staging folders that a killed process left behind; none lives for a day."""
    cutoff = time.time() - STALE_STAGING_S
    for folder in parent.glob(".staging-*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # gone already: another process swept it


def _file_sha256(fp: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := fp.read(zipsafe.CHUNK):
        digest.update(chunk)
    fp.seek(0)
    return digest.hexdigest()


def _safe_filename(name: str) -> str:
    """The entry's base name reduced to harmless characters (the numbered prefix keeps it unique)."""
    base = name.rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)[-80:]
