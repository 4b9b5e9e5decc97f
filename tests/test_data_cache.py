"""The image cache: decoded once, square uint8, in RAM or memory-mapped, with bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.data.zips import classes, encode, make_zip, png
from PIL import Image

from core.data import ImageCache, IngestError, Sample, ingest
from core.data import cache as cache_module

ROOT = Path(__file__).resolve().parents[1]
RED, BLUE = (255, 0, 0), (0, 0, 255)


def banded(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    """Red in the centre square, blue in the margins of the longer side."""
    width, height = size
    image = Image.new("RGB", size, BLUE)
    side = min(size)
    left, top = (width - side) // 2, (height - side) // 2
    image.paste(RED, (left, top, left + side, top + side))
    image.convert(mode).save(path)
    return path


def test_images_are_cropped_to_the_centre_square_and_resized(tmp_path: Path) -> None:
    samples = [
        Sample(banded(tmp_path / "wide.png", (40, 20)), 0),
        Sample(banded(tmp_path / "tall.png", (15, 45)), 1),
    ]
    cache = ImageCache(samples, 12)
    assert not cache.on_disk
    assert cache.images.shape == (2, 3, 12, 12) and cache.images.dtype == torch.uint8
    assert cache.labels.tolist() == [0, 1]
    for image in cache.images:  # red inside: the margins are gone (the edge blends, as resizing does)
        assert (image[0, 1:-1, 1:-1] == 255).all() and (image[2, 1:-1, 1:-1] == 0).all()
    image, label = cache[1]
    assert label == 1 and isinstance(label, int) and image.shape == (3, 12, 12)


def test_the_cache_matches_torchvision_resize_then_centre_crop(tmp_path: Path) -> None:
    from torchvision.transforms import functional as TF

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8))
    photo.save(tmp_path / "photo.png")
    cached = ImageCache([Sample(tmp_path / "photo.png", 0)], 24).images[0].int()
    expected = TF.pil_to_tensor(TF.center_crop(TF.resize(photo, 24), 24)).int()
    assert (cached - expected).abs().float().mean() < 2


def test_greyscale_and_small_images_come_out_as_three_channels(tmp_path: Path) -> None:
    Image.new("L", (5, 5), 77).save(tmp_path / "grey.png")
    cache = ImageCache([Sample(tmp_path / "grey.png", 0)], 16)
    assert (cache.images == 77).all()


def test_a_large_cache_is_memory_mapped_under_the_dataset_and_reused(lab_home: Path, monkeypatch) -> None:
    dataset = ingest(make_zip(classes({"cat": 3, "dog": 3})))
    in_ram = ImageCache(dataset.train, 16)
    on_disk = ImageCache(dataset.train, 16, max_ram_bytes=100)
    assert on_disk.on_disk and torch.equal(on_disk.images, in_ram.images)
    files = list((dataset.root / "cache").glob("*.u8"))
    assert len(files) == 1 and files[0].stat().st_size == len(dataset.train) * 3 * 16 * 16

    def decode_again(*args, **kwargs):
        raise AssertionError("decoded although the cache file exists")

    monkeypatch.setattr(cache_module, "square_pixels", decode_again)
    again = ImageCache(dataset.train, 16, max_ram_bytes=100)
    assert torch.equal(again.images, in_ram.images)


def test_a_different_size_builds_its_own_cache_file(lab_home: Path) -> None:
    dataset = ingest(make_zip(classes({"cat": 3, "dog": 3})))
    ImageCache(dataset.train, 16, max_ram_bytes=0)
    ImageCache(dataset.train, 20, max_ram_bytes=0)
    assert len(list((dataset.root / "cache").glob("*.u8"))) == 2


def test_an_empty_split_gives_an_empty_cache() -> None:
    cache = ImageCache([], 8)
    assert len(cache) == 0 and cache.images.shape == (0, 3, 8, 8)


def test_a_file_that_vanished_after_validation_is_named(tmp_path: Path) -> None:
    (tmp_path / "gone.png").write_bytes(png(0))
    sample = Sample(tmp_path / "gone.png", 0)
    (tmp_path / "gone.png").write_bytes(b"not any more")
    with pytest.raises(IngestError, match="gone.png"):
        ImageCache([sample], 8)


def test_unknown_interpolation_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose one of: nearest, bilinear, bicubic, lanczos"):
        ImageCache([], 8, interpolation="area")


def test_progress_counts_decoded_images(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(encode(Image.new("RGB", (30, 20)), "JPEG"))
    calls = []
    ImageCache([Sample(tmp_path / "a.jpg", 0)] * 3, 8, progress=lambda *call: calls.append(call))
    assert calls == [(1, 3), (2, 3), (3, 3)]


MEASURE = textwrap.dedent(
    """
    import json, sys, threading, time
    import torch
    torch.set_num_threads(1)
    from core.data import ImageCache, ingest

    def anon_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))

    peak = baseline = anon_kib()
    running = True

    def sample():
        global peak
        while running:
            peak = max(peak, anon_kib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    dataset = ingest(sys.argv[1])
    cache = ImageCache(dataset.train + dataset.val, int(sys.argv[2]), max_ram_bytes=32 << 20)
    checksum = sum(int(chunk.sum(dtype=torch.int64)) for chunk in cache.images.split(100))  # read it all
    running = False
    sampler.join()
    print(json.dumps({"images": len(cache), "on_disk": cache.on_disk, "grew_mib": (peak - baseline) / 1024,
                      "checksum": checksum}))
    """
)


def test_ten_thousand_images_ingest_and_cache_with_bounded_memory(lab_home: Path, tmp_path: Path) -> None:
    count, size = 10_000, 64  # a RAM cache would hold 10,000 x 3 x 64 x 64 bytes = 117 MiB
    upload = tmp_path / "big.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        for i in range(count):
            archive.writestr(f"class{i % 4}/{i}.png", png(i, (12, 12)))
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(upload), str(size)],
        cwd=ROOT,
        env={**os.environ, "TRANSFER_LAB_HOME": str(lab_home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(result.stdout)
    assert measured["images"] == count and measured["on_disk"]
    assert measured["checksum"] > 0
    # 45 MiB measured (the manifest of 10,000 records); a RAM-backed cache alone would add 117 MiB
    assert measured["grew_mib"] < 80, measured  # anonymous memory: the mapped cache is not counted
