"""Where the shift-type thresholds come from, and whether they hold on data they never saw.

    .venv/bin/python bench/shift_type.py [--images 32]

Runs EfficientNet-Lite0 over generated data sets whose kind of shift from ImageNet is known by
construction, and prints the tail BatchNorm shift (the most shifted tenth of the channels) per
depth quarter, the spike (first quarter over second), the trend (log of the deepest over the
first) and the type ``core.analysis.shift`` reads from them:

- input-level (the look changes, the content does not): photos grey-scaled, colour-shifted,
  turned into line drawings; digits; the bundled faces (grey crops) and textures (grey patches);
- content (the look is a photo's, what it shows is not): photos cut into tiles and shuffled;
- none: colour photo crops as they are.

FIT sets fixed the thresholds; CHECK sets (other photos, other digits, the bundled samples) never
informed them.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from similarity import Maker, digits, photo_crops, probed_sets

from core.analysis.shift import depth_profile, shift_type

Change = Callable[[Image.Image, random.Random], Image.Image]


def changed(maker: Maker, change: Change) -> Maker:
    def make(rng: random.Random) -> Iterator[tuple[str, Image.Image]]:
        for label, image in maker(rng):
            yield label, change(image, rng)

    return make


def grey(image: Image.Image, rng: random.Random) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def colour_shifted(image: Image.Image, rng: random.Random) -> Image.Image:
    """Channels swapped and saturation pushed: a strong colour cast, the same scene."""
    r, g, b = image.convert("RGB").split()
    swapped = Image.merge("RGB", (b, r, g))
    return ImageEnhance.Color(swapped).enhance(rng.uniform(1.8, 2.6))


def line_drawing(image: Image.Image, rng: random.Random) -> Image.Image:
    edges = ImageOps.grayscale(image).filter(ImageFilter.FIND_EDGES)
    return ImageOps.invert(ImageOps.autocontrast(edges)).convert("RGB")


def tiles_shuffled(image: Image.Image, rng: random.Random) -> Image.Image:
    """8 x 8 tiles in a random order: every local patch a photo's, the whole no object."""
    pixels = np.asarray(image.convert("RGB").resize((224, 224)))
    tiles = [pixels[y : y + 28, x : x + 28] for y in range(0, 224, 28) for x in range(0, 224, 28)]
    rng.shuffle(tiles)
    rows = [np.concatenate(tiles[i : i + 8], axis=1) for i in range(0, 64, 8)]
    return Image.fromarray(np.concatenate(rows, axis=0))


FIT_PHOTOS = ("astronaut", "coffee", "rocket", "china")
CHECK_PHOTOS = ("chelsea", "flower", "hubble_deep_field")
FIT: dict[str, tuple[Maker, str]] = {
    "photos": (photo_crops(FIT_PHOTOS), "none"),
    "grey photos": (changed(photo_crops(FIT_PHOTOS), grey), "input"),
    "colour-shifted photos": (changed(photo_crops(FIT_PHOTOS), colour_shifted), "input"),
    "line drawings": (changed(photo_crops(FIT_PHOTOS), line_drawing), "input"),
    "digits 0-4": (digits(range(5)), "input"),
    "shuffled tiles": (changed(photo_crops(FIT_PHOTOS), tiles_shuffled), "content"),
}
CHECK: dict[str, tuple[Maker, str]] = {
    "other photos": (photo_crops(CHECK_PHOTOS), "none"),
    "other grey photos": (changed(photo_crops(CHECK_PHOTOS), grey), "input"),
    "other colour-shifted": (changed(photo_crops(CHECK_PHOTOS), colour_shifted), "input"),
    "other line drawings": (changed(photo_crops(CHECK_PHOTOS), line_drawing), "input"),
    "digits 5-9": (digits(range(5, 10)), "input"),
    "other shuffled tiles": (changed(photo_crops(CHECK_PHOTOS), tiles_shuffled), "content"),
}
SAMPLES_CHECKED = {"faces": "input", "textures": "input"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per data set (default 32)")
    args = parser.parse_args()
    print(
        f"{'set':<22} {'group':<6} {'tail shift by depth quarter':<30} {'spike':>6} {'trend':>6}  type     expected"
    )
    for name, group, expected, found in probed_sets(FIT, CHECK, SAMPLES_CHECKED, args.images):
        kind = shift_type(depth_profile(found.layer_tails))
        shown = " ".join(f"{s:.2f}" for s in depth_profile(found.layer_tails))
        print(
            f"{name:<22} {group:<6} {shown:<30} {kind.spike:>6.1f} {kind.trend:>+6.2f}  {kind.kind:<8} {expected}",
            flush=True,
        )


if __name__ == "__main__":
    main()
