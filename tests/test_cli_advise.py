"""``python -m core advise``: JSON for machines, a one-line error and exit 2 for bad arguments."""

import json
import subprocess
import sys

import pytest

from core.cli import main


def test_advise_json_has_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["advise", "--images", "1500", "--classes", "5", "--similarity", "different", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["case"] == 2 and data["name"] == "truncated feature extraction"
    assert {"steps", "rationale", "thresholds", "alternatives"} <= data.keys()


def test_advise_text_names_the_case_and_steps(capsys: pytest.CaptureFixture[str]) -> None:
    main(["advise", "--images", "2,000,000", "--classes", "100", "--similarity", "similar"])
    out = capsys.readouterr().out
    assert out.startswith("Case 3: fine-tuning")
    assert "1. Remove the last fully connected layer." in out


def test_dividing_line_flag_moves_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "advise",
            "--images",
            "5000",
            "--classes",
            "5",
            "--similarity",
            "similar",
            "--dividing-line",
            "1000",
            "--json",
        ]
    )
    assert json.loads(capsys.readouterr().out)["case"] == 3


@pytest.mark.parametrize(
    "args",
    [
        ["advise", "--images", "lots", "--classes", "2", "--similarity", "similar"],
        ["advise", "--images", "100", "--classes", "2", "--similarity", "sorta"],
        ["advise", "--images", "100", "--similarity", "similar"],
        ["no-such-command"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "core", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "error:" in result.stderr


def test_impossible_data_set_is_refused_with_exit_1() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "advise",
            "--images",
            "3",
            "--classes",
            "5",
            "--similarity",
            "similar",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "python -m core advise: 3 images cannot cover 5 classes"
