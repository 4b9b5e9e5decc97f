"""Every way an upload is refused: a one-line IngestError, and nothing left on disk."""

from __future__ import annotations

import io
import os
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.data.zips import classes, encode, encrypted, make_zip, noise, png

from core.data import IngestError, Limits, ingest

GOOD = classes({"cat": 3, "dog": 3})


def refuse(data: bytes, home: Path, match: str, limits: Limits | None = None) -> str:
    with pytest.raises(IngestError, match=match) as caught:
        ingest(data, limits=limits)
    message = str(caught.value)
    assert "\n" not in message
    datasets = home / "datasets"
    assert not datasets.exists() or list(datasets.iterdir()) == [], "a refused upload left files behind"
    return message


def test_a_parent_directory_entry_is_refused_and_nothing_escapes(lab_home: Path, tmp_path: Path) -> None:
    refuse(make_zip(GOOD | {"cat/../../escaped.png": png(99)}), lab_home, r"'\.\.'")
    assert not list(tmp_path.rglob("escaped.png"))


@pytest.mark.parametrize("name", ["/tmp/absolute.png", "\\windows\\abs.png", "C:/Users/x/abs.png"])
def test_an_absolute_path_is_refused(lab_home: Path, name: str) -> None:
    refuse(make_zip(GOOD | {name: png(99)}), lab_home, "absolute path")


def test_a_backslash_parent_directory_is_refused(lab_home: Path) -> None:
    refuse(make_zip(GOOD | {"cat\\..\\..\\evil.png": png(99)}), lab_home, r"'\.\.'")


def test_a_symlink_is_refused(lab_home: Path) -> None:
    refuse(make_zip(GOOD, symlinks={"cat/link.png": "/etc/passwd"}), lab_home, "symbolic link")


def test_too_many_uncompressed_bytes_is_a_zip_bomb(lab_home: Path) -> None:
    limits = Limits(max_total_bytes=1000)
    refuse(make_zip(GOOD), lab_home, "the limit is 1,000", limits)


def test_an_extreme_compression_ratio_is_a_zip_bomb(lab_home: Path) -> None:
    bomb = b"BM" + bytes(2_000_000)  # a "bmp" of zeros: about 1000:1 under deflate
    message = refuse(make_zip(GOOD | {"cat/bomb.bmp": bomb}), lab_home, "zip bomb")
    assert "cat/bomb.bmp" in message


def test_the_ratio_limit_spares_small_entries(lab_home: Path) -> None:
    flat = encode(noise(0, (64, 64)).point(lambda _: 0), "BMP")  # 12 KB of zeros: a real image
    dataset = ingest(make_zip(GOOD | {"cat/flat.bmp": flat}))
    assert "cat/flat.bmp" in {s.name for s in dataset.train + dataset.val}


def test_too_many_entries_is_refused_before_parsing_them(lab_home: Path) -> None:
    refuse(make_zip(GOOD), lab_home, "6 entries; the limit is 5", Limits(max_entries=5))


def lying_count(data: bytes, count: int = 1) -> bytes:
    """``data`` with the end record's entry counts rewritten; ``zipfile`` never reads them."""
    at = data.rfind(b"PK\x05\x06")
    return data[: at + 8] + struct.pack("<HH", count, count) + data[at + 12 :]


def as_zip64(data: bytes, count: int = 1) -> bytes:
    """``data`` rewritten with zip64 end records that claim ``count`` entries."""
    at = data.rfind(b"PK\x05\x06")
    size, offset = struct.unpack_from("<II", data, at + 12)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    end = data[at : at + 8] + struct.pack("<HHII", 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + data[at + 20 :]
    return data[:at] + record + locator + end


def empty_entries(n: int) -> bytes:
    return make_zip(GOOD | {f"cat/empty{i:03d}.txt": b"" for i in range(n)})


@pytest.mark.parametrize(
    "forge",
    [lying_count, as_zip64, lambda data: b"self-extractor stub" + lying_count(data)],
    ids=["end-record", "zip64-end-record", "prefixed"],
)
def test_a_zip_that_understates_its_entries_is_refused_before_parsing_them(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch, forge: Callable[[bytes], bytes]
) -> None:
    data = forge(empty_entries(500))
    assert len(zipfile.ZipFile(io.BytesIO(data)).infolist()) == 506  # what zipfile would build

    def parse_nothing(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile.ZipFile was built before the entry limit refused the zip")

    monkeypatch.setattr(zipfile, "ZipFile", parse_nothing)
    refuse(data, lab_home, "more than 100 entries; the limit is 100", Limits(max_entries=100))


def test_an_honest_zip64_layout_is_read(lab_home: Path) -> None:
    dataset = ingest(as_zip64(make_zip(GOOD), count=6))
    assert len(dataset.train) + len(dataset.val) == 6


def test_a_nested_zip_is_ignored_and_counted(lab_home: Path) -> None:
    dataset = ingest(make_zip(GOOD | {"cat/more.zip": make_zip(GOOD)}))
    assert dataset.report.ignored == {"nested archive (not unpacked)": 1}
    assert any("inside the upload ignored" in w for w in dataset.report.warnings)
    assert len(dataset.train) + len(dataset.val) == 6


def test_an_encrypted_zip_is_refused(lab_home: Path) -> None:
    refuse(encrypted(make_zip(GOOD)), lab_home, "encrypted")


@pytest.mark.parametrize("data", [b"", b"hello, not a zip", png(0)], ids=["empty-file", "text", "png"])
def test_a_file_that_is_not_a_zip_is_refused(lab_home: Path, data: bytes) -> None:
    refuse(data, lab_home, "not a zip")


def test_a_truncated_zip_is_refused(lab_home: Path) -> None:
    data = make_zip(GOOD)
    refuse(data[: len(data) // 2], lab_home, "not a zip")


def test_an_empty_zip_is_refused(lab_home: Path) -> None:
    refuse(make_zip({}), lab_home, "the zip is empty")


def test_a_zip_of_folders_only_is_refused(lab_home: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.mkdir("cat")
        archive.mkdir("dog")
    refuse(buffer.getvalue(), lab_home, "holds only folders")


def test_a_zip_without_images_is_refused(lab_home: Path) -> None:
    message = refuse(make_zip({"cat/readme.txt": b"x", ".DS_Store": b"x"}), lab_home, "no images found")
    assert "1 not an image" in message


def test_one_class_only_is_refused(lab_home: Path) -> None:
    refuse(make_zip(classes({"cat": 5})), lab_home, r"only one class \('cat'\)")


def test_a_class_with_one_image_is_refused(lab_home: Path) -> None:
    refuse(make_zip(classes({"cat": 5, "dog": 1})), lab_home, r"class 'dog' has 1 usable image")


def test_a_class_whose_only_other_image_is_corrupt_is_refused(lab_home: Path) -> None:
    files = classes({"cat": 5, "dog": 1}) | {"dog/broken.png": png(50)[:30]}
    refuse(make_zip(files), lab_home, r"class 'dog' has 1 usable image")


def test_a_class_only_in_val_is_refused(lab_home: Path) -> None:
    files = classes({"cat": 3, "dog": 3}, prefix="train/") | classes(
        {"cat": 1, "fox": 1}, prefix="val/", start=9
    )
    refuse(make_zip(files), lab_home, r"class 'fox' has images in val/ but none in train/")


def test_splits_mixed_with_class_folders_are_refused(lab_home: Path) -> None:
    files = classes({"cat": 3, "dog": 3}, prefix="train/") | classes({"fox": 2}, start=9)
    refuse(make_zip(files), lab_home, r"split folders \(train\) next to other folders \(fox\)")


def test_val_without_train_is_refused(lab_home: Path) -> None:
    refuse(make_zip(classes({"cat": 3, "dog": 3}, prefix="val/")), lab_home, "no train/ folder")


def test_a_missing_path_is_refused(lab_home: Path, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file or folder"):
        ingest(tmp_path / "nope.zip")


def test_only_unreadable_images_are_refused_with_examples(lab_home: Path) -> None:
    files = {"cat/a.png": b"garbage", "dog/b.jpg": b"more garbage"}
    refuse(make_zip(files), lab_home, r"no readable images \(2 skipped, e\.g\. 'cat/a\.png': not an image")


def test_a_zip_path_is_refused_the_same_way_as_its_bytes(lab_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "one-class.zip"
    path.write_bytes(make_zip(classes({"cat": 3})))
    with pytest.raises(IngestError, match="only one class"):
        ingest(path)
    assert os.listdir(lab_home / "datasets") == []


def test_staging_left_by_a_killed_ingestion_is_swept_after_a_day(lab_home: Path) -> None:
    datasets = lab_home / "datasets"
    old, fresh = datasets / ".staging-old", datasets / ".staging-fresh"
    for folder in (old, fresh):
        (folder / "images").mkdir(parents=True)
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    ingest(make_zip(GOOD))
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a live ingestion
