"""Every image is normalised to 8-bit RGB the same way, or skipped by name with the reason."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fixtures.data.zips import classes, encode, make_zip, noise
from PIL import Image

from core.data import IngestError, Limits, decode_image, ingest

RED = (220, 20, 20)


def solid(mode: str, value, size: tuple[int, int] = (6, 4)) -> Image.Image:
    return Image.new(mode, size, value)


def pixel(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    return image.getpixel(xy)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_accepted_format_decodes_to_rgb(fmt: str) -> None:
    image = decode_image(encode(solid("RGB", RED), fmt))
    assert image.mode == "RGB" and image.size == (6, 4)
    assert np.allclose(pixel(image), RED, atol=12)  # lossy formats come close


def test_a_gif_gives_its_first_frame() -> None:
    frames = [solid("RGB", RED), solid("RGB", (20, 20, 220))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert np.allclose(pixel(decode_image(data)), RED, atol=12)


def test_exif_orientation_is_applied() -> None:
    upright = Image.new("RGB", (6, 4), (0, 0, 0))
    upright.paste(RED, (0, 0, 3, 4))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    image = decode_image(encode(upright, "JPEG", exif=exif, quality=95))
    assert image.size == (4, 6)
    assert pixel(image, (3, 0))[0] > 150 and pixel(image, (0, 5))[0] < 80  # red now on top


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 128, (128, 128, 128)),
        ("1", 1, (255, 255, 255)),
        ("RGBA", (200, 0, 0, 255), (200, 0, 0)),
        ("RGBA", (200, 0, 0, 0), (255, 255, 255)),  # fully transparent: the white background
        ("LA", (0, 128), (127, 127, 127)),  # black at half alpha over white
    ],
)
def test_modes_convert_to_rgb(mode: str, value, expected: tuple[int, int, int]) -> None:
    image = decode_image(encode(solid(mode, value), "PNG"))
    assert image.mode == "RGB"
    assert np.allclose(pixel(image), expected, atol=1)


def test_a_palette_image_with_transparency_lands_on_white() -> None:
    palette = solid("P", 1)
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    opaque = decode_image(encode(palette, "PNG"))
    transparent = decode_image(encode(palette, "PNG", transparency=1))
    assert pixel(opaque) == (200, 0, 0) and pixel(transparent) == (255, 255, 255)


def test_cmyk_converts_to_rgb() -> None:
    image = decode_image(encode(solid("CMYK", (0, 255, 255, 0)), "TIFF"))  # no cyan, all magenta+yellow
    assert pixel(image) == (255, 0, 0)


def test_sixteen_bit_data_is_scaled_not_clipped_to_white() -> None:
    ramp = np.linspace(0, 4095, 64, dtype=np.uint16).reshape(8, 8)  # a 12-bit scan
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    values = np.asarray(decode_image(data))[..., 0]
    assert values.min() == 0 and values.max() == 255
    assert 100 < values.mean() < 155  # a ramp stays a ramp; a plain convert gives ~250


def test_float_tiff_in_unit_range_is_scaled() -> None:
    data = encode(Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)), "TIFF")
    assert pixel(decode_image(data)) == (128, 128, 128)


def test_a_truncated_image_is_refused_by_name() -> None:
    data = encode(noise(0, (64, 64)), "JPEG")
    with pytest.raises(IngestError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_formats_outside_the_list_are_not_decoded() -> None:
    with pytest.raises(IngestError, match="not an image"):
        decode_image(encode(solid("RGB", RED), "ICO"))


def test_corrupt_and_truncated_files_are_skipped_and_listed(lab_home: Path) -> None:
    jpeg = encode(noise(0, (64, 64)), "JPEG")
    files = classes({"cat": 3, "dog": 3}) | {"cat/cut.jpg": jpeg[:300], "dog/junk.png": b"\x89PNG nonsense"}
    report = ingest(make_zip(files)).report
    skipped = {item["file"]: item["reason"] for item in report.skipped}
    assert skipped.keys() == {"cat/cut.jpg", "dog/junk.png"}
    assert "truncated" in skipped["cat/cut.jpg"]
    assert report.num_images == 6


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels: enough for any size check."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(bytes(64))  # far too few rows: this file must never be decoded
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "limits", "reason"),
    [
        # over our limit, far under Pillow's: a real decode would have worked
        (200, 200, Limits(max_image_pixels=10_000), "200x200 is more than 10,000 pixels"),
        # between 1x and 2x Pillow's own limit, where Pillow only warns (decoding these
        # headers would fail as truncated: the reason shows the size check came first)
        (10_000, 10_000, Limits(), "10000x10000 is more than 50,000,000 pixels"),
        # past 2x Pillow's limit, where Pillow refuses before we see the size
        (20_000, 20_000, Limits(max_image_pixels=500_000_000), "more than 178,956,970 pixels"),
    ],
)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, at open
def test_too_many_pixels_is_skipped_from_the_header_before_decoding(
    lab_home: Path, width: int, height: int, limits: Limits, reason: str
) -> None:
    header = png_header(width, height) if width > 200 else encode(noise(9, (width, height)))
    files = classes({"cat": 3, "dog": 3}) | {"cat/huge.png": header}
    report = ingest(make_zip(files), limits=limits).report
    assert report.skipped == [{"file": "cat/huge.png", "reason": reason}]
    assert report.num_images == 6
