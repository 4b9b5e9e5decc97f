"""Small data sets that ship with the app, so every page works before anyone uploads a zip.

Each is a committed zip under ``samples/`` (rebuilt by ``scripts/make_samples.py`` from data
inside scikit-image and scikit-learn) and goes through the same ``ingest`` as an upload.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.storage import CODE_ROOT

SAMPLES_DIR = CODE_ROOT / "samples"


@dataclass(frozen=True)
class SampleSet:
    name: str
    title: str
    description: str
    source: str
    licence: str
    similarity: str  # to ImageNet: "similar" | "different", as the Advisor asks it
    images: int
    classes: int


SAMPLES: dict[str, SampleSet] = {
    sample.name: sample
    for sample in (
        SampleSet(
            name="faces",
            title="Faces vs. background",
            description="100 face crops and 100 background crops from news photos, 25x25 greyscale.",
            source="Labeled Faces in the Wild (Huang et al., UMass Amherst), the 200-crop subset "
            "shipped as scikit-image's skimage.data.lfw_subset()",
            licence="LFW is published by its authors for research without a formal licence; the "
            "subset is redistributed inside scikit-image (BSD-3-Clause)",
            similarity="similar",
            images=200,
            classes=2,
        ),
        SampleSet(
            name="digits",
            title="Handwritten digits",
            description="1,797 handwritten digits 0-9, 8x8 pixels with 16 grey levels: far from "
            "ImageNet's photos.",
            source="UCI ML Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, 1998), "
            "the copy shipped as scikit-learn's sklearn.datasets.load_digits()",
            licence="CC BY 4.0 (UCI Machine Learning Repository); shipped inside scikit-learn (BSD-3-Clause)",
            similarity="different",
            images=1797,
            classes=10,
        ),
        SampleSet(
            name="textures",
            title="Brick, grass and gravel",
            description="64 patches of 64x64 pixels cut from each of three greyscale texture photos.",
            source="scikit-image's skimage.data.brick(), grass() and gravel(), from CC0Textures "
            "(Bricks25, Gravel04) and DeviantArt user linolafett (Grass-01)",
            licence="CC0 1.0 (public domain dedication), as scikit-image documents for each photo",
            similarity="similar",
            images=192,
            classes=3,
        ),
    )
}


def sample_path(name: str) -> Path:
    """The committed zip of sample ``name``, ready for ``core.data.ingest``."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose one of: {', '.join(SAMPLES)}")
    return SAMPLES_DIR / f"{name}.zip"


@lru_cache(maxsize=1)
def _digests() -> dict[str, str]:
    return {hashlib.sha256(sample_path(name).read_bytes()).hexdigest(): name for name in SAMPLES}


def sample_for_digest(sha256: str) -> SampleSet | None:
    """The sample whose zip has this content hash: a data set's report names its source by
    hash, whatever file name it was first ingested under."""
    name = _digests().get(sha256)
    return SAMPLES[name] if name else None
