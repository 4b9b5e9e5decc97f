"""The bundled sample data sets: small, committed, ingestible, and rebuildable from packages."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import ingest
from core.data.samples import SAMPLES, sample_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_sample_is_a_small_committed_zip_that_ingests_cleanly(lab_home: Path, name: str) -> None:
    sample = SAMPLES[name]
    path = sample_path(name)
    assert path.stat().st_size < 500_000
    report = ingest(path).report
    assert len(report.classes) == sample.classes
    assert report.num_images == sample.images
    assert report.skipped == [] and report.ignored == {}
    assert sample.similarity in ("similar", "different")
    assert sample.source and sample.licence and sample.title and sample.description


def test_an_unknown_sample_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of: faces, digits, textures"):
        sample_path("cats")


def pixels_by_name(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: np.asarray(Image.open(io.BytesIO(archive.read(name)))) for name in archive.namelist()}


def test_the_script_rebuilds_the_committed_samples(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_samples.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in SAMPLES:
        committed = pixels_by_name(sample_path(name).read_bytes())
        rebuilt = pixels_by_name((tmp_path / f"{name}.zip").read_bytes())
        assert committed.keys() == rebuilt.keys()
        for entry, image in committed.items():  # JPEG encoders may differ by a grey level
            assert np.abs(image.astype(int) - rebuilt[entry]).mean() < 1, entry
