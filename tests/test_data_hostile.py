"""Uploads built to cost: pixel bombs, overlapping entries, expansion, too many classes, and
names that would act on a terminal. Each is refused (or defused) cheaply, in one line."""

from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import pytest
from fixtures.data.zips import classes, make_zip, one_bit_png, png, repeated_records, stretched_record

from core.cli import main
from core.data import IngestError, Limits, ingest
from core.data import decode as decode_module
from core.data import ingestion as ingest_module


def test_a_pixel_bomb_is_refused_from_headers_before_costing_cpu() -> None:
    """30 blank one-bit 7000x7000 PNGs: 9 KB of zip, 1.5 gigapixels. Decoding them took 8.5 s of
    CPU; the budget (100 megapixels per MiB of archive) refuses at the first header."""
    bomb = make_zip({f"{label}/{i}.png": one_bit_png(7000, 7000) for label in "ab" for i in range(15)})
    assert len(bomb) < 12_000
    started = time.process_time()
    with pytest.raises(IngestError, match="pixels") as refused:
        ingest(bomb)
    cpu = time.process_time() - started
    assert cpu < 0.5, f"{cpu:.2f} s of CPU for a {len(bomb) / 1024:.0f} KB upload"
    assert "per MiB of archive" in str(refused.value)


def test_photos_pass_the_pixel_budget(tmp_path: Path) -> None:
    from core.data.samples import sample_path

    for name in ("faces", "digits", "textures"):
        assert ingest(sample_path(name)).report.num_images > 100


def test_the_budget_follows_the_archive_size() -> None:
    limits = Limits()
    assert ingest_module.pixel_budget(10 << 20, limits) == 1_000_000_000  # 10 MiB: 1 gigapixel
    assert ingest_module.pixel_budget(1_000, limits) == limits.min_pixel_budget
    assert ingest_module.pixel_budget(None, limits) == limits.max_total_pixels  # a server folder


def test_identical_images_are_decoded_once() -> None:
    same = png(7, (16, 16))
    upload = make_zip(
        {f"{label}/copy{i}.png": same for label in "ab" for i in range(10)} | classes({"a": 2, "b": 2})
    )
    decoder = mock.Mock(wraps=decode_module.read_image)  # 24 files: decoded in this process
    with mock.patch.object(decode_module, "read_image", decoder):
        dataset = ingest(upload)
    assert decoder.call_count == 5  # one for the 20 copies, one for each of the 4 others
    assert dataset.report.num_images == 24


@pytest.mark.parametrize("times", [1, 200])
def test_records_that_repeat_one_entry_are_refused(times: int) -> None:
    upload = repeated_records(
        make_zip(classes({"a": 2, "b": 2}) | {"a/zeros.bmp": bytes(1 << 20)}), times, index=4
    )
    with pytest.raises(IngestError, match="overlap"):
        ingest(upload)


def test_a_record_whose_data_runs_into_the_next_entry_is_refused() -> None:
    with pytest.raises(IngestError, match="overlap"):
        ingest(stretched_record(make_zip(classes({"a": 3, "b": 3}))))


def test_a_whole_archive_that_expands_too_far_is_refused() -> None:
    """Each entry under the per-entry check's floor, together 20 MB from a few KB."""
    upload = make_zip(classes({"a": 2, "b": 2}) | {f"a/zeros{i}.bmp": bytes(500_000) for i in range(40)})
    with pytest.raises(IngestError, match="expands .* in all"):
        ingest(upload)


def test_too_many_classes_are_refused_before_anything_is_unpacked(lab_home: Path) -> None:
    upload = make_zip(classes({str(label): 2 for label in range(5)}))
    with pytest.raises(IngestError, match="5 class folders; the limit is 4"):
        ingest(upload, limits=Limits(max_classes=4))
    assert not list((lab_home / "datasets").glob("[0-9a-f]*"))


def test_many_small_classes_make_one_warning_and_case_twins_are_named() -> None:
    upload = make_zip(classes({f"class{label}": 2 for label in range(40)} | {"Cat": 2, "cat": 2}))
    warnings = ingest(upload).report.warnings
    small = [w for w in warnings if "fewer than 10 images" in w]
    assert len(small) == 1 and small[0].startswith("42 classes have fewer than 10 images each")
    assert any("differ only in case ('Cat' and 'cat')" in w for w in warnings)


def test_inspect_prints_names_from_an_upload_inertly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "red\x1b[31m\x1b]0;owned\x07\u202e"
    (tmp_path / "names.zip").write_bytes(make_zip(classes({hostile: 2, "plain": 2})))
    assert main(["inspect", str(tmp_path / "names.zip")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "red\\x1b[31m" in out  # shown, as text
