"""The benchmark's data set: JPEG photo crops, labelled by image quality, split by source photo.

    .venv/bin/python bench/photos.py OUT.zip [--per-class 5] [--seed 0]

Real use looks like this: a few hundred JPEG photos of a few hundred pixels a side, and a label
that is about the picture, not the photo it came from. No photo data set can be downloaded here,
so the crops come from the 19 photographs that ship inside scikit-image and scikit-learn
(colour: astronaut, cat, coffee, rocket, Hubble deep field, immunohistochemistry, retina, China,
flower; grey: camera, clock, coins, moon, page, text, cell, brick, grass, gravel). Each crop is
a random square of 224 to 320 pixels, saved as JPEG, in one of four classes of a common
inspection task:

- ``sharp``: as photographed (JPEG quality 92);
- ``blurred``: a Gaussian blur of radius 1.2 to 2.4 pixels;
- ``noisy``: Gaussian noise of sigma 10 to 22 grey levels;
- ``compressed``: JPEG quality 8 to 20 (blocking and ringing).

Every class draws from every photo, and the split is by photo: the crops of 6 photos form
``val/``, those of the other 13 ``train/``, so no photo is seen on both sides and accuracy
measures what carries over to new pictures. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

CLASSES = ("sharp", "blurred", "noisy", "compressed")
VAL_PHOTOS = ("astronaut", "flower", "clock", "moon", "gravel", "retina")
TIMESTAMP = (2024, 1, 1, 0, 0, 0)


def photos() -> dict[str, Image.Image]:
    """The photographs that ship inside the packages, as RGB pictures, by name."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
             "retina", "camera", "clock", "coins", "moon", "page", "text", "cell", "brick", "grass",
             "gravel")  # fmt: skip
    found = {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in names}
    china, flower = load_sample_images().images
    return found | {"china": Image.fromarray(china), "flower": Image.fromarray(flower)}


def degrade(label: str, image: Image.Image, rng: random.Random) -> bytes:
    """The crop as a JPEG file, degraded as its class says."""
    quality = 92
    if label == "blurred":
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1.2, 2.4)))
    elif label == "noisy":
        pixels = np.asarray(image, dtype=np.float32)
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(10, 22), pixels.shape)
        image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    elif label == "compressed":
        quality = rng.randint(8, 20)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def crop(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A random square of 224 to 320 pixels (smaller photos: as large as they allow)."""
    side = min(rng.randint(224, 320), *photo.size)
    left, top = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
    return photo.crop((left, top, left + side, top + side))


def build(out: Path, per_class: int = 5, seed: int = 0, progress: Callable[[str], None] = print) -> Path:
    """Write the zip: ``train/<class>/`` and ``val/<class>/``, ``per_class`` crops per photo."""
    rng = random.Random(seed)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, photo in sorted(photos().items()):
            split = "val" if name in VAL_PHOTOS else "train"
            for label in CLASSES:
                for i in range(per_class):
                    info = zipfile.ZipInfo(f"{split}/{label}/{name}-{i}.jpg", TIMESTAMP)
                    archive.writestr(info, degrade(label, crop(photo, rng), rng))
            progress(f"{name}: {per_class * len(CLASSES)} crops to {split}/")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=5, help="crops per photo and class (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, args.per_class, args.seed, progress=lambda line: print(line, file=sys.stderr))


if __name__ == "__main__":
    main()
