"""Decode one untrusted image file into a plain RGB picture, or refuse it with a reason.

Ingestion, the image cache and the Predict page all go through :func:`read_image`, so a photo
looks the same to training and to prediction: EXIF orientation applied, first frame only, every
mode (greyscale, palette, alpha, CMYK, 16-bit) turned into 8-bit RGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from core.data.errors import IngestError
from core.limits import Limits

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Only these decoders may run: Pillow would otherwise also try EPS (which runs Ghostscript), PSD,
# ICO and dozens of rarely fuzzed formats on whatever bytes a user sends.
DECODERS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
BACKGROUND = (255, 255, 255)  # transparent pixels become white, as a browser shows them
# Pillow's filter for each interpolation name a preprocess may give, shared by the image cache
# and prediction so that both shrink pictures the same way.
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class ImageInfo:
    """What the file said about itself, before any conversion."""

    width: int
    height: int
    mode: str
    format: str


def read_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = Limits.max_image_pixels,
    draft: tuple[int, int] | None = None,
) -> tuple[Image.Image, ImageInfo]:
    """Decode ``source`` fully into an RGB image; raise :class:`IngestError` with the reason.

    ``draft`` lets JPEG decode at a reduced scale (no smaller than the size given), which is
    several times faster when the picture will be shrunk anyway.
    """
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    # Decoders of malformed files raise anything from OSError to struct.error or ZeroDivisionError;
    # for untrusted input each of them means "not a usable image", never a crash.
    try:
        with Image.open(fp, formats=DECODERS) as image:
            info = ImageInfo(image.width, image.height, image.mode, image.format or "")
            # Pillow only warns between 1x and 2x its MAX_IMAGE_PIXELS: our own limit decides.
            _check_pixels(info, max_pixels)
            if draft is not None and image.format in ("JPEG", "MPO"):
                image.draft("RGB", draft)
            image.load()
            return upright_rgb(image), info
    except IngestError:
        raise
    except Image.DecompressionBombError:
        # Raised while opening, past twice Pillow's own limit, before we can read the size.
        raise IngestError(f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except Exception as exc:  # noqa: BLE001 - see the comment above
        raise IngestError(_decode_failure(exc)) from None


def read_header(source: str | Path | bytes, *, max_pixels: int = Limits.max_image_pixels) -> ImageInfo:
    """What the file says it is, without decoding its pixels: cheap enough to check every
    budget before any decoding is paid for. Raises :class:`IngestError` with the reason."""
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(fp, formats=DECODERS) as image:
            info = ImageInfo(image.width, image.height, image.mode, image.format or "")
    except Image.DecompressionBombError:
        raise IngestError(f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except Exception as exc:  # noqa: BLE001 - as in read_image: any failure means "not an image"
        raise IngestError(_decode_failure(exc)) from None
    _check_pixels(info, max_pixels)
    return info


def decode_image(source: str | Path | bytes, *, max_pixels: int = Limits.max_image_pixels) -> Image.Image:
    """The RGB picture in ``source`` (a path or the file's bytes), normalised as for training."""
    return read_image(source, max_pixels=max_pixels)[0]


def thumbnail(source: str | Path | bytes, size: int) -> Image.Image:
    """A copy of ``source`` at most ``size`` pixels a side, as training sees it (upright, 8-bit
    RGB): what a preview shows. A browser, and Streamlit on its way there, take 8-bit images
    only: a 16-bit PNG handed over as a file cannot be shown ("cannot write mode I;16")."""
    image = read_image(source, draft=(size, size))[0]
    image.thumbnail((size, size))
    return image


def upright_rgb(image: Image.Image) -> Image.Image:
    """``image`` turned by its EXIF orientation, then :func:`to_rgb`: what training sees of it."""
    return to_rgb(_upright(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode Pillow decodes; alpha is flattened onto white."""
    if image.mode in HIGH_DEPTH_MODES:
        return Image.fromarray(_to_8bit(np.asarray(image), image.mode), "L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Scale deep pixels into 0..255 by the image's own maximum.

    A plain ``convert`` clips 16-bit values at 255, turning nearly everything white; dividing by
    65535 instead leaves 10- and 12-bit scans (microscopy, X-ray) almost black.
    """
    values = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max()) if values.size else 0.0
    if peak > 255:
        values *= 255.0 / peak
    elif mode == "F" and 0 < peak <= 1:  # floats in [0, 1]
        values *= 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block costs the rotation, not the image."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - any EXIF parsing failure
        return image


def _check_pixels(info: ImageInfo, max_pixels: int) -> None:
    if info.width * info.height > max_pixels:
        raise IngestError(f"{info.width}x{info.height} is more than {max_pixels:,} pixels")


def _decode_failure(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image, or a format other than " + ", ".join(f.lower() for f in DECODERS)
    if "truncated" in text.lower():
        return "truncated image"
    return f"damaged image ({text[:120]})"
