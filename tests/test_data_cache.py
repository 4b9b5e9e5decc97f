"""The image cache: decoded once, square uint8, in RAM or memory-mapped, with bounded memory, by
worker processes over every usable core (``core.data.decode``) with the same pixels as one loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.data.zips import classes, encode, make_zip, noise, png
from PIL import Image

from core.data import ImageCache, IngestError, Sample, decode, ingest
from core.errors import disk_full, is_disk_full

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

    monkeypatch.setattr(decode, "square_pixels", decode_again)  # 3 images: decoded in this process
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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of its own, to fill for real."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          check=False, capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_cache_larger_than_the_free_disk_fails_naming_its_file(tmp_path: Path, small_disk: Path) -> None:
    """Before any decoding: writing into a sparse mapping of a full disk would kill the process (SIGBUS)."""
    (tmp_path / "a.png").write_bytes(png(1, (20, 20)))
    samples = [Sample(tmp_path / "a.png", 0)] * 30  # 30 x 3 x 128 x 128: 1.4 MiB
    with pytest.raises(OSError) as full:
        ImageCache(samples, 128, max_ram_bytes=0, cache_dir=small_disk / "cache")
    assert is_disk_full(full.value)
    cache_file = Path(full.value.filename)
    assert cache_file.parent == small_disk / "cache" and cache_file.suffix == ".u8"
    assert disk_full(full.value).startswith(f"the disk is full: could not write {cache_file};")
    assert list((small_disk / "cache").iterdir()) == []  # no half-written file either


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


# ------------------------------------------------------------------ decoding in worker processes

MULTICORE = pytest.mark.skipif(decode.usable_cores() < 2, reason="workers need two usable cores")


@pytest.fixture
def in_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers for any number of images (their start-up counted as free), in chunks of 4."""
    monkeypatch.setattr(decode, "START_S", 0.0)
    monkeypatch.setattr(decode, "CHUNK", 4)
    monkeypatch.delenv(decode.WORKERS_ENV, raising=False)


def mixed_images(folder: Path, count: int) -> list[Sample]:
    """JPEG, PNG, greyscale, palette and transparent images of assorted shapes, as samples."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(count):
        image = noise(i, (20 + 7 * (i % 5), 16 + 11 * (i % 3)))
        kind = ("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "L"), ("PNG", "P"), ("PNG", "RGBA")
        fmt, mode = kind[i % len(kind)]
        path = folder / f"{i:03d}.{fmt.lower()}"
        path.write_bytes(encode(image.convert(mode), fmt))
        samples.append(Sample(path, i % 3))
    return samples


def children() -> set[int]:
    """The processes this one started that still exist (zombies included)."""
    me, found = str(os.getpid()), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        if fields[1] == me:
            found.add(int(stat.parent.name))
    return found


@MULTICORE
@pytest.mark.parametrize("max_ram_bytes", [1 << 30, 0], ids=["in RAM", "memory-mapped"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_workers_decode_the_same_pixels_as_one_process(
    tmp_path: Path, in_workers: None, monkeypatch: pytest.MonkeyPatch, max_ram_bytes: int, interpolation: str
) -> None:
    samples = mixed_images(tmp_path / "images", 30)
    assert decode.workers_for(len(samples), decode.Squares.item_s(12)) >= 2
    built = ImageCache(samples, 12, interpolation=interpolation, max_ram_bytes=max_ram_bytes,
                       cache_dir=tmp_path / "parallel")  # fmt: skip
    monkeypatch.setenv(decode.WORKERS_ENV, "1")
    assert decode.workers_for(len(samples), decode.Squares.item_s(12)) == 1
    alone = ImageCache(samples, 12, interpolation=interpolation, max_ram_bytes=max_ram_bytes,
                       cache_dir=tmp_path / "serial")  # fmt: skip
    assert built.on_disk == alone.on_disk == (max_ram_bytes == 0)
    assert torch.equal(built.images, alone.images) and built.images.sum() > 0
    assert torch.equal(built.labels, alone.labels)


def test_a_pool_of_any_size_gives_what_this_process_gives(tmp_path: Path, in_workers: None) -> None:
    """Explicit worker counts, more than the cores: the pool's own results, whatever the machine."""
    samples = mixed_images(tmp_path, 13)
    results = {}
    for workers in (1, 3):
        fd = decode.memory_file(13 * 3 * 10 * 10)
        task = decode.Squares(decode.mapped(fd, (13, 3, 10, 10)), Image.Resampling.BILINEAR, fd)
        done: list[int] = []
        with decode.Pool(task, workers, lambda chunk, done=done: done.extend(i for i, _ in chunk)) as pool:
            for sample in samples:
                pool.put(str(sample.path))
            pool.join()
        os.close(fd)
        assert sorted(done) == list(range(13))
        results[workers] = task.array.copy()
    assert np.array_equal(results[1], results[3])


@MULTICORE
def test_progress_from_workers_rises_to_the_total(tmp_path: Path, in_workers: None) -> None:
    samples = mixed_images(tmp_path, 18)
    calls: list[tuple[int, int]] = []
    ImageCache(samples, 8, progress=lambda *call: calls.append(call))
    done = [d for d, _ in calls]
    assert {total for _, total in calls} == {18}
    assert done == sorted(set(done)) and done[-1] == 18
    assert len(calls) == 5  # one call per chunk of 4 as it completes


@MULTICORE
@pytest.mark.parametrize("max_ram_bytes", [1 << 30, 0], ids=["in RAM", "memory-mapped"])
def test_a_corrupt_image_fails_the_build_by_name_and_leaves_no_file_or_worker(
    tmp_path: Path, in_workers: None, max_ram_bytes: int
) -> None:
    samples = mixed_images(tmp_path / "images", 24)
    samples[17].path.write_bytes(b"\xff\xd8 not a JPEG any more")
    before = children()
    with pytest.raises(IngestError) as failed:
        ImageCache(samples, 8, max_ram_bytes=max_ram_bytes, cache_dir=tmp_path / "cache")
    assert str(failed.value).startswith(f"{samples[17].path.name}: ")
    assert str(failed.value).endswith("(the file changed after it was validated?)")
    assert "\n" not in str(failed.value)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    assert children() == before


@MULTICORE
def test_ctrl_c_during_the_build_stops_the_workers_and_leaves_no_file(
    tmp_path: Path, in_workers: None
) -> None:
    samples = mixed_images(tmp_path / "images", 24)
    before = children()

    def interrupt(done: int, total: int) -> None:
        assert children() - before  # the workers are running
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ImageCache(samples, 8, max_ram_bytes=0, cache_dir=tmp_path / "cache", progress=interrupt)
    assert list((tmp_path / "cache").iterdir()) == []
    assert children() == before


@MULTICORE
def test_a_worker_that_dies_fails_the_build_saying_so(tmp_path: Path, in_workers: None) -> None:
    samples = mixed_images(tmp_path / "images", 40)
    before = children()

    def kill_the_workers(done: int, total: int) -> None:
        for pid in children() - before:
            os.kill(pid, 9)

    with pytest.raises(RuntimeError, match=r"a decoding worker \(pid \d+\) died \(signal SIGKILL\)"):
        ImageCache(samples, 8, max_ram_bytes=0, cache_dir=tmp_path / "cache", progress=kill_the_workers)
    assert list((tmp_path / "cache").iterdir()) == []
    assert children() == before


def test_a_pool_that_cannot_start_all_its_workers_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = decode._Worker.__init__
    calls = []

    def third_fails(worker: object, task: object) -> None:
        calls.append(task)
        if len(calls) == 3:
            raise OSError(11, "Resource temporarily unavailable")  # what fork says at the process limit
        started(worker, task)

    monkeypatch.setattr(decode._Worker, "__init__", third_fails)
    before = children()
    with pytest.raises(OSError, match="Resource temporarily unavailable"):
        decode.Pool(decode.Check(1000, (1, 1)), 4, lambda results: None)
    assert len(calls) == 3 and children() == before


AFFINITY = textwrap.dedent(
    """
    import json, os
    from core.data import decode
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(json.dumps([decode.usable_cores(), decode.worker_cap(), decode.workers_for(100_000, decode.Squares.item_s(224))]))
    """
)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_workers_count_the_cores_this_process_may_use_not_the_machines() -> None:
    done = subprocess.run(
        [sys.executable, "-c", AFFINITY], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == [1, 1, 1]  # one core allowed: decoded in the process itself
    assert decode.usable_cores() == len(os.sched_getaffinity(0))


def test_the_environment_caps_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(decode.WORKERS_ENV, raising=False)
    assert decode.worker_cap() == decode.usable_cores()
    monkeypatch.setenv(decode.WORKERS_ENV, "1")
    assert decode.workers_for(100_000, decode.Squares.item_s(224)) == 1
    monkeypatch.setenv(decode.WORKERS_ENV, str(decode.usable_cores() + 5))
    assert decode.worker_cap() == decode.usable_cores()  # a cap, never more than the cores
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv(decode.WORKERS_ENV, bad)
        with pytest.raises(
            ValueError, match=f"TRANSFER_LAB_DECODE_WORKERS must be .* 1 or more.*got '{bad}'"
        ):
            decode.workers_for(10, decode.Squares.item_s(224))


@pytest.mark.parametrize(
    ("cores", "count", "item_s", "workers"),
    [
        (2, 128, decode.Squares.item_s(224), 1),  # measured: 0.6x as fast in workers
        (2, 1_024, decode.Squares.item_s(224), 2),  # 1.5x
        (2, 512, decode.Check.ITEM_S, 1),  # 0.6x
        (2, 2_000, decode.Check.ITEM_S, 2),  # 1.2x
        (16, 100, decode.Squares.item_s(224), 1),  # 0.15 s of work: not worth 0.2 s of start-up
        (16, 2_000, decode.Squares.item_s(64), 16),
        (16, 40, decode.Squares.item_s(2048), 2),  # big images: a chunk each for two workers
    ],
)
def test_a_few_images_are_decoded_here_many_in_workers(
    monkeypatch: pytest.MonkeyPatch, cores: int, count: int, item_s: float, workers: int
) -> None:
    monkeypatch.delenv(decode.WORKERS_ENV, raising=False)
    monkeypatch.setattr(decode, "usable_cores", lambda: cores)
    assert decode.workers_for(count, item_s) == workers


@MULTICORE
def test_ingestion_validates_in_workers_with_the_same_decisions(
    tmp_path: Path, in_workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "upload"
    for sample in mixed_images(folder / "cat", 12) + mixed_images(folder / "dog", 12):
        if sample.path.name.startswith("003"):
            sample.path.write_bytes(sample.path.read_bytes()[:60])  # truncated
    (folder / "dog" / "notes.jpg").write_bytes(b"not an image")
    (folder / "dog" / "copy.png").write_bytes((folder / "cat" / "001.png").read_bytes())
    manifests = []
    for workers in ("2", "1"):
        monkeypatch.setenv(decode.WORKERS_ENV, workers)
        monkeypatch.setenv("TRANSFER_LAB_HOME", str(tmp_path / f"home-{workers}"))
        calls: list[tuple[int, int]] = []
        dataset = ingest(folder, progress=lambda *call, calls=calls: calls.append(call))
        assert [d for d, _ in calls] == sorted({d for d, _ in calls}) and calls[-1] == (26, 26)
        manifests.append((dataset.report.to_json(), [s.path for s in dataset.train + dataset.val]))
    assert manifests[0] == manifests[1]
    report = json.loads(manifests[0][0])
    assert report["num_images"] == 23 and {item["file"] for item in report["skipped"]} == {
        "cat/003.png", "dog/003.png", "dog/notes.jpg"
    }  # fmt: skip


def test_the_package_and_its_workers_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import core.data, core.data.decode, core.data.ingestion\n"
        "from core.data import Dataset, DatasetReport, IngestError, Limits, Sample, decode_image, ingest\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision'}))\n"
        "from core.data import ImageCache\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "True"]  # the cache, and only the cache, brings torch
    assert (
        "import core.data.decode" not in decode.BOOT and "from core.data.decode import serve" in decode.BOOT
    )
