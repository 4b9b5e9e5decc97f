"""Exported models: files that run without our code, at any batch size, as the model did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from core.artifacts import export
from core.artifacts.export import ExportError, export_model, load_model
from core.cli import main
from core.models.preprocess import Preprocess

PRE = Preprocess(resize=40, crop=32)
LABELS = ["cat", "dog", "owl"]


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, len(LABELS)),
    ).eval()


def test_the_program_predicts_what_the_model_predicts_at_any_batch_size(tmp_path: Path) -> None:
    model = small_net()
    export_model(model, PRE, LABELS, tmp_path)
    program, pre, labels = load_model(tmp_path)
    for batch in (1, 3, 17):
        x = torch.randn(batch, 3, 32, 32)
        torch.testing.assert_close(program(x), model(x), atol=1e-5, rtol=1e-5)
    assert (pre, labels) == (PRE, LABELS)


def test_the_model_directory_holds_what_anyone_needs_to_run_it(tmp_path: Path) -> None:
    export_model(small_net(), PRE, LABELS, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json", "model.pt2", "preprocess.json"]
    assert json.loads((tmp_path / "labels.json").read_text()) == LABELS
    assert set(json.loads((tmp_path / "preprocess.json").read_text())) == {
        "resize",
        "crop",
        "mean",
        "std",
        "interpolation",
    }


def test_a_model_trained_in_bf16_channels_last_exports_as_portable_fp32(tmp_path: Path) -> None:
    model = small_net().to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    export_model(model, PRE, LABELS, tmp_path)
    program, _, _ = load_model(tmp_path)
    assert program(torch.randn(2, 3, 32, 32)).dtype == torch.float32
    assert next(model.parameters()).dtype == torch.bfloat16  # the caller's model is left alone


def test_a_directory_without_a_model_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text("[]")
    with pytest.raises(ExportError, match=r"lacks model.pt2, preprocess.json"):
        load_model(tmp_path)


def test_onnx_without_its_packages_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    export_model(small_net(), PRE, LABELS, tmp_path / "model")
    monkeypatch.setattr(export, "onnx_available", lambda: False)
    assert main(["export", str(tmp_path), "--onnx"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == (
        "python -m core export: ONNX export needs the packages onnx and onnxscript: "
        "pip install onnx onnxscript"
    )


def test_onnx_export_runs_where_its_packages_are_installed(tmp_path: Path) -> None:
    if not export.onnx_available():
        pytest.skip("onnx and onnxscript are optional and not installed here")
    export_model(small_net(), PRE, LABELS, tmp_path / "model")
    assert main(["export", str(tmp_path), "--onnx"]) == 0
    assert (tmp_path / "model" / "model.onnx").stat().st_size > 0


def test_export_command_lists_the_model_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_model(small_net(), PRE, LABELS, tmp_path / "model")
    assert main(["export", str(tmp_path), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [Path(f).name for f in listing["files"]] == ["labels.json", "model.pt2", "preprocess.json"]
    assert listing["labels"] == LABELS


def test_export_command_refuses_a_run_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path)]) == 1
    assert "is it the model/ of a finished run?" in capsys.readouterr().err
