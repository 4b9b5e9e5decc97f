"""Read an untrusted zip without trusting it: names, links, encryption and sizes are checked
against :class:`~core.limits.Limits` before a byte is extracted, and again while extracting.

Nothing here writes to a path taken from the archive: callers choose every destination.
"""

from __future__ import annotations

import hashlib
import itertools
import lzma
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.data.errors import IngestError
from core.limits import Limits

CHUNK = 1 << 20
_CENTRAL_HEADER = b"PK\x01\x02"
_END_RECORD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_RECORD = b"PK\x06\x06"
_HEADER_LEN = 46  # a central-directory header before its name, extra field and comment
_LOCAL_LEN = 30  # a local file header before its name and extra field
_END_LEN = 22  # the end record before its comment
_ZIP64_TAIL = 56 + 20  # zip64 end record and locator, just before the end record
_DRIVE = re.compile(r"^[A-Za-z]:")
# What a damaged or unsupported entry raises while being read.
_ENTRY_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError)


class DamagedEntry(Exception):
    """One entry could not be read; the rest of the zip may still be fine."""


@dataclass(frozen=True)
class Entry:
    """A regular file in the archive, under its checked, '/'-separated name."""

    name: str
    info: zipfile.ZipInfo


def open_zip(fp: BinaryIO, limits: Limits) -> zipfile.ZipFile:
    """Open ``fp`` as a zip, refusing one with more entries than the limit before parsing it:
    ``ZipFile`` builds an object per entry, so a million empty entries would cost gigabytes."""
    directory = _central_directory(fp)
    limit = limits.max_entries
    if _count_records(fp, directory, stop=limit + 1) > limit:
        shown = f"{directory.declared:,}" if directory.declared > limit else f"more than {limit:,}"
        raise IngestError(f"the zip has {shown} entries; the limit is {limit:,}")
    try:
        return zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise IngestError(f"not a readable zip file ({exc})") from None


def checked_entries(archive: zipfile.ZipFile, limits: Limits) -> list[Entry]:
    """Every file entry, after refusing the whole zip for any unsafe one."""
    infos = archive.infolist()
    if not infos:
        raise IngestError("the zip is empty")
    if len(infos) > limits.max_entries:
        raise IngestError(f"the zip has {len(infos):,} entries; the limit is {limits.max_entries:,}")
    entries = []
    for info in infos:
        if info.flag_bits & 0x1:
            raise IngestError(f"the zip is encrypted ({info.filename!r}): upload it without a password")
        if _is_symlink(info):
            raise IngestError(f"the zip contains a symbolic link ({info.filename!r}); links are refused")
        name = safe_name(info.filename)
        if name and not info.is_dir():
            entries.append(Entry(name, info))
    if not entries:
        raise IngestError("the zip is empty: it holds only folders")
    _refuse_overlaps(archive.fp, infos)
    return entries


def safe_name(raw: str) -> str:
    """``raw`` as a relative '/'-separated path; refuses absolute paths and '..' anywhere."""
    parts = raw.replace("\\", "/").split("/")
    if raw.startswith(("/", "\\")) or _DRIVE.match(raw):
        raise IngestError(f"the zip contains an absolute path ({raw!r}); paths must be relative")
    if ".." in parts:
        raise IngestError(f"the zip contains a path that climbs out with '..' ({raw!r})")
    return "/".join(part for part in parts if part not in ("", "."))


def check_sizes(entries: list[Entry], limits: Limits, archive_bytes: int) -> None:
    """Refuse a zip bomb from the sizes the archive declares, before extracting anything: one
    entry's ratio, the whole archive's, and the total.

    The declared sizes are also what ``zipfile`` stops reading at, so a lying header cannot
    produce more than this; :func:`extract` counts the real bytes all the same.
    """
    total = 0
    for entry in entries:
        size, packed = entry.info.file_size, entry.info.compress_size
        ratio = size / max(packed, 1)
        if size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
            raise IngestError(
                f"{entry.name!r} expands {ratio:,.0f}:1 (the limit is {limits.max_ratio:,.0f}:1): "
                "this looks like a zip bomb"
            )
        total += size
    if total > limits.max_total_bytes:
        raise IngestError(f"the images unpack to {total:,} bytes; the limit is {limits.max_total_bytes:,}")
    ratio = total / max(archive_bytes, 1)
    if total >= limits.ratio_min_bytes and ratio > limits.max_ratio:
        raise IngestError(
            f"the zip expands {ratio:,.0f}:1 in all (the limit is {limits.max_ratio:,.0f}:1): "
            "this looks like a zip bomb"
        )


def extract(archive: zipfile.ZipFile, entry: Entry, dest: Path, budget: int) -> tuple[int, str]:
    """Copy ``entry`` to ``dest`` in chunks; return (bytes written, sha256 of the content).

    Raises :class:`IngestError` when more than ``budget`` bytes (what is left of the total
    allowed) come out, and
    :class:`DamagedEntry` when the entry cannot be read (bad CRC, corrupt stream, unknown
    compression); the caller skips the latter and refuses the zip for the former.
    """
    digest = hashlib.sha256()
    written = 0
    try:
        with archive.open(entry.info) as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > budget:
                    raise IngestError(f"{entry.name!r} unpacks past the limit on total bytes")
                digest.update(chunk)
                out.write(chunk)
    except _ENTRY_ERRORS as exc:
        dest.unlink(missing_ok=True)
        raise DamagedEntry(f"damaged zip entry ({exc})") from None
    return written, digest.hexdigest()


def _refuse_overlaps(fp: BinaryIO, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse records whose data overlap or repeat: many central-directory records can point at
    one local header (or into another entry's data), so a few KB would unpack into gigabytes.

    Each record's span runs from its local header to the end of its compressed data, with the
    name and extra lengths the local header itself gives (they may differ from the central ones).
    """
    spans = []
    for info in infos:
        fp.seek(info.header_offset)
        local = fp.read(_LOCAL_LEN)
        name, extra = struct.unpack_from("<2H", local, 26) if len(local) == _LOCAL_LEN else (0, 0)
        spans.append(
            (info.header_offset, info.header_offset + _LOCAL_LEN + name + extra + info.compress_size, info)
        )
    spans.sort(key=lambda span: span[0])
    for (_, end, earlier), (start, _, later) in itertools.pairwise(spans):
        if start < end:
            raise IngestError(
                f"the zip's entries {earlier.filename!r} and {later.filename!r} overlap: a crafted archive "
                "that repeats its data; refused"
            )
    fp.seek(0)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix zips keep st_mode in the high 16 bits; other systems have no symlinks to store.
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


@dataclass(frozen=True)
class _Directory:
    """Where ``zipfile`` will look for the central directory, and the entry count it claims."""

    start: int
    size: int
    declared: int


def _central_directory(fp: BinaryIO) -> _Directory:
    """The central directory as ``zipfile`` locates it: from the end record's size field
    (zip64's when present), counting back from the record, so data prepended to the zip and a
    wrong offset field move it the same way for both of us."""
    end_at, end = _end_record(fp)
    declared, size = struct.unpack_from("<HI", end, 10)
    start = end_at - size
    fp.seek(max(end_at - _ZIP64_TAIL, 0))
    zip64 = fp.read(_ZIP64_TAIL)
    if end_at >= _ZIP64_TAIL and zip64[:4] == _ZIP64_END_RECORD and zip64[56:60] == _ZIP64_LOCATOR:
        declared, size = struct.unpack_from("<QQ", zip64, 32)
        start = end_at - _ZIP64_TAIL - size
    fp.seek(0)
    return _Directory(start, size, declared)


def _end_record(fp: BinaryIO) -> tuple[int, bytes]:
    """(offset, bytes) of the end-of-central-directory record, found the way ``zipfile`` does:
    at the very end when there is no comment, else the last signature in the final 64 KiB."""
    fp.seek(0, 2)
    size = fp.tell()
    fp.seek(max(size - _END_LEN, 0))
    last = fp.read(_END_LEN)
    if len(last) == _END_LEN and last[:4] == _END_RECORD and last[-2:] == b"\0\0":
        return size - _END_LEN, last
    tail_at = max(size - (1 << 16) - _END_LEN, 0)
    fp.seek(tail_at)
    tail = fp.read()
    at = tail.rfind(_END_RECORD)
    if at < 0 or len(tail) - at < _END_LEN:
        raise IngestError("not a zip file")
    return tail_at + at, tail[at : at + _END_LEN]


def _count_records(fp: BinaryIO, directory: _Directory, stop: int) -> int:
    """The central-directory headers ``zipfile`` would parse, counted up to ``stop`` without
    reading their names: the cost is bounded by the limit, not by what the zip claims."""
    if directory.start < 0:
        return 0  # zipfile refuses the offset itself
    fp.seek(directory.start)
    count = consumed = 0
    while consumed < directory.size and count < stop:
        header = fp.read(_HEADER_LEN)
        if len(header) < _HEADER_LEN or header[:4] != _CENTRAL_HEADER:
            break  # damaged: zipfile stops here too, and says why
        name, extra, comment = struct.unpack_from("<3H", header, 28)
        fp.seek(name + extra + comment, 1)
        consumed += _HEADER_LEN + name + extra + comment
        count += 1
    fp.seek(0)
    return count
