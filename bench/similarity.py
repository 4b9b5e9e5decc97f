"""Where the similarity thresholds come from, and whether they hold on data they never saw.

    .venv/bin/python bench/similarity.py [--images 40]

Runs EfficientNet-Lite0 over two disjoint families of data sets and prints, for each, the mean
BatchNorm shift per depth quarter, the similarity score and the verdict. The FIT sets fixed
``core.analysis.similarity``'s midpoint; the CHECK sets never informed it. Every natural-photo set
should read "similar" and every other "different"; the margins say by how much.

- FIT: crops of four colour photos and a grey one (astronaut, coffee, rocket, China, camera), and
  of only two (astronaut, rocket: a narrow data set has less variance than ImageNet, which the
  shift counts too),
  digits 0-4 (scikit-learn's 8x8 digits, upscaled), crops of three texture photos (brick, grass,
  gravel), generated gratings and checkerboards.
- CHECK: crops of other photos (the cat Chelsea, the flower, the clock; and the first two alone),
  flipped and colour-shifted;
  digits 5-9; generated discs and polygons on flat backgrounds; the bundled faces and textures samples.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from photos import crop, photos

from core.analysis.analyse import stratified_sample
from core.analysis.probe import Candidate, Probe, probe
from core.analysis.similarity import DIFFERENT_AT, MIDPOINT, SIMILAR_AT, measure
from core.data import ImageCache, ingest
from core.data.samples import sample_path
from core.models.backbones import resolve
from core.training.device import accelerator

Maker = Callable[[random.Random], Iterator[tuple[str, Image.Image]]]


def photo_crops(names: tuple[str, ...], *, shifted: bool = False) -> Maker:
    def make(rng: random.Random) -> Iterator[tuple[str, Image.Image]]:
        pictures = photos()
        while True:
            for name in names:
                image = crop(pictures[name], rng)
                if shifted:
                    image = ImageOps.mirror(image)
                    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
                yield name, image

    return make


def digits(classes: range) -> Maker:
    def make(rng: random.Random) -> Iterator[tuple[str, Image.Image]]:
        from sklearn.datasets import load_digits

        data = load_digits()
        order = [i for i in range(len(data.target)) if data.target[i] in classes]
        rng.shuffle(order)
        for i in order:
            pixels = (data.images[i] * (255 / 16)).astype(np.uint8)
            yield str(data.target[i]), Image.fromarray(pixels).resize((64, 64), Image.Resampling.BILINEAR)

    return make


def gratings(rng: random.Random) -> Iterator[tuple[str, Image.Image]]:
    y, x = np.mgrid[0:160, 0:160]
    while True:
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 30)
        kind = rng.choice(("grating", "checker"))
        if kind == "grating":
            wave = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
        else:
            wave = np.sign(np.sin(x * 2 * math.pi / period) * np.sin(y * 2 * math.pi / period))
        colour = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
        pixels = 127 + (wave[..., None] * (colour - 127))
        yield kind, Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def shapes(rng: random.Random) -> Iterator[tuple[str, Image.Image]]:
    while True:
        kind = rng.choice(("disc", "polygon"))
        image = Image.new("RGB", (160, 160), tuple(rng.randint(0, 255) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 4)):
            fill = tuple(rng.randint(0, 255) for _ in range(3))
            cx, cy, r = rng.randint(20, 140), rng.randint(20, 140), rng.randint(10, 50)
            if kind == "disc":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            else:
                points = [
                    (cx + r * math.cos(a), cy + r * math.sin(a))
                    for a in sorted(rng.uniform(0, 6.28) for _ in range(5))
                ]
                draw.polygon(points, fill=fill)
        yield kind, image


FIT: dict[str, tuple[Maker, str]] = {
    "photos": (photo_crops(("astronaut", "coffee", "rocket", "china", "camera")), "similar"),
    "two photos": (photo_crops(("astronaut", "rocket")), "similar"),
    "digits 0-4": (digits(range(5)), "different"),
    "texture photos": (photo_crops(("brick", "grass", "gravel")), "different"),
    "gratings": (gratings, "different"),
}
CHECK: dict[str, tuple[Maker, str]] = {
    "other photos": (photo_crops(("chelsea", "flower", "clock"), shifted=True), "similar"),
    "two other photos": (photo_crops(("chelsea", "flower"), shifted=True), "similar"),
    "digits 5-9": (digits(range(5, 10)), "different"),
    "shapes": (shapes, "different"),
}
SAMPLES_CHECKED = {"faces": "different", "textures": "different"}


def write(maker: Maker, count: int, folder: Path, seed: int) -> Path:
    rng = random.Random(seed)
    for i, (label, image) in zip(range(count), maker(rng)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(folder / label / f"{i}.jpg", quality=90)
    return folder


def probed_sets(
    fit: dict[str, tuple[Maker, str]],
    check: dict[str, tuple[Maker, str]],
    samples: dict[str, str],
    images: int,
) -> Iterator[tuple[str, str, str, Probe]]:
    """Each calibration set (the ``fit`` ones, then the ``check`` ones and the bundled ``samples``)
    generated, validated and probed by EfficientNet-Lite0: its name, group, expected reading and
    probe, one at a time (a set's images are deleted once it is probed)."""
    accel, candidate = accelerator(), Candidate(resolve("efficientnet_lite0"))
    with tempfile.TemporaryDirectory() as tmp:
        sources = [(name, group, expected, lambda m=maker, n=name: write(m, images, Path(tmp) / n, 0))
                   for group, table in (("fit", fit), ("check", check)) for name, (maker, expected) in table.items()]  # fmt: skip
        sources += [
            (name, "check", expected, lambda n=name: sample_path(n)) for name, expected in samples.items()
        ]
        for name, group, expected, source in sources:
            dataset = ingest(source())
            sample = stratified_sample(dataset.train + dataset.val, images, 0)
            yield (
                name,
                group,
                expected,
                probe(candidate, ImageCache(sample, candidate.preprocess.resize), accel),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="images per data set (default 40)")
    args = parser.parse_args()
    print(f"midpoint shift {MIDPOINT}; similar at score >= {SIMILAR_AT}, different at <= {DIFFERENT_AT}")
    print(
        f"{'set':<16} {'group':<6} {'shift by depth quarter':<32} {'score':>6}  answer     expected  margin"
    )
    for name, group, expected, found in probed_sets(FIT, CHECK, SAMPLES_CHECKED, args.images):
        similarity = measure(found.layer_shifts, found.logits, found.candidate.label)
        margin = similarity.score - SIMILAR_AT if expected == "similar" else DIFFERENT_AT - similarity.score
        profile = " ".join(f"{s:.3f}" for s in similarity.shift_by_depth)
        print(f"{name:<16} {group:<6} {profile:<32} {similarity.score:>6.3f}  {similarity.answer:<10} "
              f"{expected:<9} {margin:+.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
