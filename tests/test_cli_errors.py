"""Every command says why it refused, in one line on stderr with exit code 1: never a traceback.

The mapping lives in one place (``core.cli.main`` catches ``TransferLabError``); these tests walk
each command into one of the refusals a user can actually cause.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.data.samples import sample_path
from core.errors import TransferLabError, one_line

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line ``python -m core ARGV`` prints when it refuses (and asserts that it does)."""
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_advise_refuses_an_impossible_data_set(capsys) -> None:
    line = refusal(capsys, "advise", "--images", "3", "--classes", "5", "--similarity", "similar")
    assert line == "python -m core advise: 3 images cannot cover 5 classes"


def test_backbones_refuses_an_unknown_family(capsys) -> None:
    assert "unknown family 'Nope'" in refusal(capsys, "backbones", "--family", "Nope")


def test_fetch_weights_refuses_an_unknown_backbone(capsys) -> None:
    line = refusal(capsys, "fetch-weights", "resnet18", "not_a_net")
    assert "unknown backbone 'not_a_net'; choose one of:" in line and "resnet18" in line


def test_inspect_refuses_what_is_not_a_zip(capsys, tmp_path: Path) -> None:
    (tmp_path / "notes.zip").write_text("hello")
    assert refusal(capsys, "inspect", str(tmp_path / "notes.zip")).endswith("not a zip file")


@NO_CUDA
def test_estimate_refuses_a_device_this_machine_lacks(capsys) -> None:
    plan = json.dumps({"data": str(sample_path("digits")), "device": "cuda", "image_size": 32})
    assert "torch sees no CUDA GPU" in refusal(capsys, "estimate", plan)


@pytest.mark.parametrize("text", ["5", "null", '["data"]'])
def test_estimate_refuses_a_plan_that_is_not_an_object(capsys, text: str) -> None:
    assert "a plan is a JSON object of plan fields" in refusal(capsys, "estimate", text)


def test_estimate_refuses_plan_text_too_long_to_be_a_file_name(capsys) -> None:
    assert "unknown plan field" in refusal(capsys, "estimate", json.dumps({"x" * 300: 1}))


@NO_CUDA
def test_train_refuses_a_device_this_machine_lacks(capsys, tmp_path: Path) -> None:
    line = refusal(
        capsys, "train", str(sample_path("faces")), "--backbone", "efficientnet_lite0",
        "--device", "cuda", "--image-size", "32", "--epochs", "1", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert line.startswith("python -m core train: training failed: device 'cuda' asked for")


@pytest.mark.parametrize("command", ["predict", "export", "serve"])
def test_a_folder_without_a_model_is_refused(capsys, tmp_path: Path, command: str) -> None:
    images = [str(sample_path("faces"))] if command == "predict" else []
    assert "is it the model/ of a finished run?" in refusal(capsys, command, str(tmp_path), *images)


@NO_CUDA
def test_the_refusal_is_one_line_from_a_real_process() -> None:
    plan = json.dumps({"data": str(sample_path("digits")), "device": "cuda", "image_size": 32})
    done = subprocess.run(
        [sys.executable, "-m", "core", "estimate", plan],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def test_one_line_names_foreign_errors_and_trusts_ours() -> None:
    assert one_line(KeyError("fc")) == "KeyError: 'fc'"
    assert one_line(TransferLabError("no such\n  run")) == "no such run"
    assert one_line(TransferLabError("x" * 1000)).endswith("...")


@NO_CUDA
@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"device": "mps"}, "MPS is not available"),
        ({"precision": "fp16"}, "precision 'fp16' needs a CUDA GPU"),
        ({"image_size": 100_000}, "image_size must be at most 2,048"),
        ({"epochs": 10**9}, "epochs must be at most 1,000"),
        ({"lr": 1e400}, "lr must be a finite number"),
    ],
)
def test_estimate_refuses_what_this_machine_or_any_cannot_run(capsys, fields: dict, said: str) -> None:
    plan = json.dumps({"data": str(sample_path("faces")), "backbone": "efficientnet_lite0", **fields})
    assert said in refusal(capsys, "estimate", plan)


def test_estimate_refuses_a_weights_file_that_is_not_a_state_dict(capsys, tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    plan = json.dumps({"data": str(sample_path("faces")), "backbone": "efficientnet_lite0",
                       "weights": str(tmp_path / "list.pt"), "image_size": 32})  # fmt: skip
    assert "holds a list, not a state_dict" in refusal(capsys, "estimate", plan)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--lr", "inf"], "lr must be a finite number, not inf"),
        (["--seed", str(2**70)], "seed must be at most 4,294,967,295"),
        (["--epochs", "5000"], "epochs must be at most 1,000"),
        (["--image-size", "99999"], "image_size must be at most 2,048"),
    ],
)
def test_train_refuses_numbers_no_run_can_use(capsys, tmp_path: Path, flags: list[str], said: str) -> None:
    argv = [
        "train",
        str(sample_path("faces")),
        "--backbone",
        "efficientnet_lite0",
        "--out",
        str(tmp_path / "run"),
    ]
    assert said in refusal(capsys, *argv, *flags)
    assert not (tmp_path / "run").exists()


def test_train_at_an_absurd_learning_rate_is_refused_before_any_work(capsys, tmp_path: Path) -> None:
    argv = ["train", str(sample_path("faces")), "--backbone", "efficientnet_lite0", "--case", "3"]
    line = refusal(capsys, *argv, "--lr", "1e308", "--out", str(tmp_path / "run"))
    assert line.endswith("lr must be at most 10, not 1e+308")
