"""The downloaded bundle runs with its README's five lines, and nothing of Transfer Lab."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.artifacts.bundle import SNIPPET, model_bundle, readme
from core.data.samples import sample_path


def test_the_readme_snippet_classifies_a_photo(finished_run: Path, tmp_path: Path) -> None:
    archive = zipfile.ZipFile(io.BytesIO(model_bundle(finished_run)))
    assert {"model.pt2", "labels.json", "preprocess.json", "README.md"} <= set(archive.namelist())
    readme = archive.read("README.md").decode()
    assert SNIPPET in readme and len(SNIPPET.strip().splitlines()) == 5
    archive.extractall(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(zipfile.ZipFile(sample_path("faces")).read("face/000.png"))
    # A clean interpreter in the bundle's folder: only torch, torchvision and pillow are used.
    result = subprocess.run(
        [sys.executable, "-I", "-c", SNIPPET],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"face", "not_face"}


def test_a_run_without_a_model_has_no_bundle(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no exported model"):
        model_bundle(tmp_path)


def test_the_readme_says_how_training_decoded_unusual_images(tmp_path: Path) -> None:
    text = " ".join(readme(tmp_path).split())
    assert "transparent pixels were composited on white" in text
    assert "16-bit images scaled to 8 bits" in text
