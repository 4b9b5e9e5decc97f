"""Rebuild the sample data sets in ``samples/`` from data that ships inside Python packages.

    .venv/bin/python scripts/make_samples.py            # rewrite samples/*.zip
    .venv/bin/python scripts/make_samples.py --out DIR  # build elsewhere (the tests compare)

Needs scikit-image and scikit-learn (dev requirements), never the network. The zips are
deterministic for given library versions: fixed entry order, timestamps and permissions.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
TIMESTAMP = (2024, 1, 1, 0, 0, 0)
TILE = 64  # texture patches, pixels


def faces() -> dict[str, bytes]:
    """scikit-image's LFW subset: 100 face crops, then 100 background crops, 25x25 grey."""
    from skimage import data

    crops = np.rint(data.lfw_subset() * 255).astype(np.uint8)
    return {
        f"{'face' if i < 100 else 'not_face'}/{i % 100:03d}.png": _png(crop) for i, crop in enumerate(crops)
    }


def digits() -> dict[str, bytes]:
    """scikit-learn's handwritten digits: 1,797 images of 8x8 pixels, 16 grey levels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    counts = dict.fromkeys(range(10), 0)
    files = {}
    for image, label in zip(pixels, bunch.target):
        files[f"{label}/{counts[label]:03d}.png"] = _png(image)
        counts[label] += 1
    return files


def textures() -> dict[str, bytes]:
    """64 non-overlapping 64x64 patches from each of scikit-image's brick, grass and gravel."""
    from skimage import data

    files = {}
    for name in ("brick", "grass", "gravel"):
        image = getattr(data, name)()
        rows, cols = image.shape[0] // TILE, image.shape[1] // TILE
        for r in range(rows):
            for c in range(cols):
                patch = image[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
                files[f"{name}/{r * cols + c:03d}.jpg"] = _jpeg(patch)
    return files


BUILDERS: dict[str, Callable[[], dict[str, bytes]]] = {"faces": faces, "digits": digits, "textures": textures}


def write_zip(files: dict[str, bytes], path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=TIMESTAMP)
            info.create_system = 3  # Unix, whatever builds it: the same bytes everywhere
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=SAMPLES_DIR, help=f"folder for the zips (default {SAMPLES_DIR})"
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {', '.join(BUILDERS)} (default: all)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - BUILDERS.keys())
    if unknown:
        parser.error(f"unknown sample {', '.join(unknown)}; choose from: {', '.join(BUILDERS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or BUILDERS:
        path = args.out / f"{name}.zip"
        write_zip(BUILDERS[name](), path)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
