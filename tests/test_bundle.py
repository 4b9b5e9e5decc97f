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
    folder = f"transfer-lab-{finished_run.name}"
    names = {f"{folder}/{n}" for n in ("model.pt2", "labels.json", "preprocess.json", "README.md")}
    assert names <= set(archive.namelist())
    assert {name.split("/")[0] for name in archive.namelist()} == {folder}  # one top-level folder
    readme = archive.read(f"{folder}/README.md").decode()
    assert SNIPPET in readme and len(SNIPPET.strip().splitlines()) == 5
    archive.extractall(tmp_path)
    tmp_path = tmp_path / folder
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


def test_every_file_of_a_run_honours_the_umask(finished_run: Path) -> None:
    """The JSON files were 0600 (a temporary file's mode) while the events were 0644."""
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    modes = {
        p.relative_to(finished_run).as_posix(): p.stat().st_mode & 0o777
        for p in finished_run.rglob("*")
        if p.is_file()
    }
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes
