"""``python -m core inspect``: the report on stdout and exit 0, or one line on stderr and exit 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.data.zips import classes, make_zip

from core.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pets(tmp_path: Path) -> Path:
    path = tmp_path / "pets.zip"
    path.write_bytes(make_zip(classes({"cat": 4, "dog": 3}) | {"dog/notes.txt": b"x"}))
    return path


def test_json_prints_the_report(lab_home: Path, pets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(pets), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["cat", "dog"] and report["num_images"] == 7
    assert report["ignored"] == {"not an image": 1} and report["source"]["name"] == "pets.zip"


def test_the_human_summary_has_a_table_and_warnings(lab_home: Path, pets: Path, capsys) -> None:
    assert main(["inspect", str(pets), "--val-fraction", "0.5", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "pets.zip: 7 images in 2 classes (class folders)" in out
    assert re.search(r"^  class +train +val +test$", out, re.MULTILINE)
    assert re.search(r"^  cat +2 +2 +0$", out, re.MULTILINE)
    assert "Warning: fewer than 10 images in class 'dog' (3)" in out


def test_a_refusal_is_one_line_on_stderr_and_exit_1(lab_home: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "one.zip"
    path.write_bytes(make_zip(classes({"cat": 4})))
    assert main(["inspect", str(path), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err
        == "python -m core inspect: only one class ('cat'): a classifier needs at least 2 class folders\n"
    )


def test_limits_come_from_the_command_line(lab_home: Path, pets: Path, capsys) -> None:
    assert main(["inspect", str(pets), "--max-entries", "3"]) == 1
    assert "the limit is 3" in capsys.readouterr().err


def test_a_bundled_sample_is_inspected_by_name(lab_home: Path, capsys) -> None:
    assert main(["inspect", "faces", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["val"] == {"face": 20, "not_face": 20}


def test_a_bad_fraction_is_an_argument_error(lab_home: Path, pets: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(pets), "--val-fraction", "1.5"])
    assert exit_info.value.code == 2
    assert "expected a number between 0 and 1" in capsys.readouterr().err


def test_the_module_runs_as_a_command(lab_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.zip"
    path.write_bytes(b"not a zip at all")
    result = subprocess.run(
        [sys.executable, "-m", "core", "inspect", str(path), "--json"],
        cwd=ROOT,
        env={**os.environ, "TRANSFER_LAB_HOME": str(lab_home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "python -m core inspect: not a zip file\n"
