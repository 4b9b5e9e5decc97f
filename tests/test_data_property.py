"""Property: whatever a zip holds, ingestion raises nothing but IngestError and writes nothing
outside ``TRANSFER_LAB_HOME/datasets/``.

The strategies build mostly valid zips (a few classes of tiny images in every mode and format)
and add hostile features: escaping or absolute names, symlinks, extreme compression ratios,
damaged images, oversized images, clutter. A refusing feature appears in about one example in
four, so most examples get as far as decoding images.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from fixtures.data.zips import encode, encrypted, make_zip, one_bit_png, repeated_records
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.data import IngestError, Limits, ingest
from core.data import decode as decode_module

# Small ceilings, scaled to these small zips: every example's images together hold a few thousand
# pixels in a few KB of archive, a pixel bomb tens of thousands.
LIMITS = Limits(
    max_total_bytes=2_000_000,
    max_ratio=50,
    ratio_min_bytes=64_000,
    max_image_pixels=2_000,
    max_pixels_per_mb=2_000_000,
    min_pixel_budget=20_000,
)
MODES = [
    ("RGB", "JPEG"),
    ("RGB", "BMP"),
    ("L", "PNG"),
    ("LA", "PNG"),
    ("P", "GIF"),
    ("RGBA", "WEBP"),
    ("CMYK", "JPEG"),
    ("CMYK", "TIFF"),
    ("I;16", "PNG"),
    ("I;16", "TIFF"),
    ("I", "TIFF"),
    ("F", "TIFF"),
    ("1", "BMP"),
    ("RGBA", "PNG"),
]
EXTENSIONS = {"JPEG": "jpg", "BMP": "bmp", "PNG": "png", "GIF": "gif", "WEBP": "webp", "TIFF": "tif"}
REFUSING = ["climb", "climb-backslash", "absolute", "symlink", "bomb", "encrypted", "overlap", "pixel-bomb"]
HARMLESS = ["clutter", "nested-zip", "ignored-bomb", "oversized", "duplicate", "loose-file", "text-as-image"]
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-5, 100_000, (height, width), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((height, width), dtype=np.float32))
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


@st.composite
def images(draw: st.DrawFn) -> tuple[str, bytes]:
    """(extension, file bytes) of a tiny image in an odd mode, now and then damaged."""
    mode, fmt = draw(st.sampled_from(MODES))
    size = draw(st.tuples(st.integers(1, 24), st.integers(1, 24)))
    data = encode(make_image(mode, *size, seed=draw(st.integers(0, 2**16))), fmt)
    damage = draw(st.sampled_from(["none"] * 6 + ["truncated", "flipped byte"]))
    if damage == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flipped byte":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return EXTENSIONS[fmt], data


@st.composite
def hostile_zips(draw: st.DrawFn, outside: Path) -> bytes:
    prefix = draw(st.sampled_from(["", "wrapper/", "a/b/", "train/"]))
    files: dict[str, bytes] = {}
    # sampled_from rather than integers: Hypothesis favours small integers, and one class or one
    # image per class would end most examples in a refusal.
    for label in range(draw(st.sampled_from([2, 3, 1]))):
        for i in range(draw(st.sampled_from([3, 2, 4, 1]))):
            extension, data = draw(images())
            files[f"{prefix}class{label}/{i}.{extension}"] = data
    features = draw(st.lists(st.sampled_from(HARMLESS), max_size=3, unique=True))
    if draw(st.sampled_from([False, False, False, True])):
        features.append(draw(st.sampled_from(REFUSING)))
    extras = [
        with_feature(
            feature,
            prefix,
            outside,
            draw(images()),
            draw(st.integers(1, 12)),
            draw(st.integers(200_000, 1_500_000)),
        )
        for feature in features
    ]
    repeats = draw(st.integers(1, 50)) if "overlap" in features else 0
    return build(files, extras, encrypt="encrypted" in features, repeats=repeats)


Extra = tuple[dict[str, bytes], dict[str, str]]  # (entries, symlinks: name -> target)


def with_feature(
    feature: str, prefix: str, outside: Path, image: tuple[str, bytes], depth: int, bomb: int
) -> Extra:
    """The entries that add one hostile or awkward ``feature`` to a zip."""
    inside = f"{prefix}class0/"
    extension, data = image
    if feature == "symlink":
        return {}, {inside + "link.png": "../" * depth + "etc/passwd"}
    entries = {
        "climb": {"../" * depth + "escaped.png": data},
        "climb-backslash": {inside + "..\\" * depth + "escaped.png": data},
        "absolute": {
            str(outside / "class0" / "absolute.png"): data,
            str(outside / "class1" / "absolute.png"): data,
        },
        "bomb": {inside + "bomb.bmp": bytes(bomb)},
        # each under the per-image limit, together over the archive's pixel budget
        "pixel-bomb": {inside + f"blank{i}.png": one_bit_png(40, 20 + i) for i in range(30)},
        "clutter": {"__MACOSX/._x.png": b"\0\5\26\7", inside + ".DS_Store": b"x", "Thumbs.db": b"x"},
        "nested-zip": {inside + "more.zip": make_zip({"class0/x.png": data})},
        "ignored-bomb": {inside + "log.txt": bytes(1_500_000)},
        "oversized": {inside + "big.png": encode(make_image("RGB", 60, 60, 0))},
        "duplicate": {inside + f"copy.{extension}": data, f"{prefix}class1/copy.{extension}": data},
        "loose-file": {f"{prefix}loose.{extension}": data},
        "text-as-image": {inside + "fake.jpg": b"just text"},
    }
    return entries.get(feature, {}), {}


def build(files: dict[str, bytes], extras: list[Extra], *, encrypt: bool = False, repeats: int = 0) -> bytes:
    entries, symlinks = dict(files), {}
    for more_entries, more_symlinks in extras:
        entries.update(more_entries)
        symlinks.update(more_symlinks)
    data = make_zip(entries, symlinks=symlinks)
    if repeats:  # many central records, one local header: the same bytes unpacked again and again
        data = repeated_records(data, repeats)
    return encrypted(data) if encrypt else data


def explicit_examples(outside: Path) -> list[bytes]:
    """Each refusing feature once, every run, whatever Hypothesis happens to draw."""
    image = ("png", encode(make_image("RGB", 4, 4, 0)))
    files = {
        f"class{label}/{i}.png": encode(make_image("RGB", 4, 4, 10 * label + i))
        for label in (0, 1)
        for i in (0, 1)
    }
    return [
        build(
            files,
            [with_feature(feature, "", outside, image, depth=6, bomb=300_000)],
            encrypt=feature == "encrypted",
            repeats=20 if feature == "overlap" else 0,
        )
        for feature in REFUSING
    ]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's complaints about damaged images
def test_hostile_zips_raise_only_ingest_error_and_write_only_under_datasets(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    homes = tmp_path / "homes"
    outcomes: list[tuple[bool, bool]] = []  # (accepted, reached image decoding)

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=hostile_zips(outside))
    def check(data: bytes) -> None:
        _reset(tmp_path)  # judge each example alone, so that shrinking finds the real culprit
        home = homes / str(len(outcomes))
        decoder = mock.Mock(wraps=decode_module.read_image)  # small zips: decoded in this process
        with (
            mock.patch.dict(os.environ, {"TRANSFER_LAB_HOME": str(home)}),
            mock.patch.object(decode_module, "read_image", decoder),
        ):
            try:
                dataset = ingest(data, limits=LIMITS)
            except IngestError as exc:
                assert str(exc) and "\n" not in str(exc)
                accepted = False
            else:
                assert len(dataset.classes) >= 2 and dataset.train
                accepted = True
        outcomes.append((accepted, decoder.called))
        _assert_contained(tmp_path, home, accepted)

    for data in explicit_examples(outside):
        check = example(data=data)(check)
    previous = os.getcwd()
    os.chdir(workdir)  # anything written relative to the working directory would show up here
    try:
        check()
    finally:
        os.chdir(previous)
    reached = sum(decoded for _, decoded in outcomes)
    assert reached > len(outcomes) / 2, f"only {reached} of {len(outcomes)} examples reached image decoding"
    assert any(accepted for accepted, _ in outcomes)


def _reset(root: Path) -> None:
    for path in root.iterdir():
        if path.name not in ("cwd", "homes", "outside"):
            _remove(path)
    for path in [*(root / "cwd").iterdir(), *(root / "outside").iterdir()]:
        if path.name != "sentinel":
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _assert_contained(root: Path, home: Path, accepted: bool) -> None:
    """Only ``home/datasets/<sha256>/`` (one, and only when accepted) was written."""
    assert sorted(p.name for p in root.iterdir()) == ["cwd", "homes", "outside"]
    assert list((root / "cwd").iterdir()) == []
    assert [p.name for p in (root / "outside").iterdir()] == ["sentinel"]
    assert not [p for p in root.rglob("escaped.png")]
    datasets = home / "datasets"
    written = sorted(p.name for p in datasets.iterdir()) if datasets.exists() else []
    if accepted:
        assert len(written) == 1 and HEX_DIGEST.fullmatch(written[0])
    else:
        assert written == []
    assert not home.exists() or [p.name for p in home.iterdir()] == ["datasets"]


@pytest.mark.parametrize("feature", REFUSING)
def test_each_refusing_feature_is_refused_on_its_own(feature: str, tmp_path: Path) -> None:
    data = dict(zip(REFUSING, explicit_examples(tmp_path)))[feature]
    with pytest.raises(IngestError):
        ingest(data, limits=LIMITS)
