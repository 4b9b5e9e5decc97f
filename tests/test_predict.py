"""Predictions from model/ alone: the top classes of each image, as the model in memory gives them."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_exported import LABELS, PRE, colour_net
from PIL import Image

from core.artifacts.export import export_model
from core.artifacts.predict import PredictError, Predictor, image_to_input
from core.cli import main
from core.data.cache import square_pixels
from core.training.transforms import to_model_input


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    export_model(colour_net(), PRE, LABELS, tmp_path / "run" / "model")
    return tmp_path / "run"


def image(tmp_path: Path, name: str, colour: tuple[int, int, int], size: tuple[int, int] = (60, 45)) -> Path:
    path = tmp_path / name
    Image.new("RGB", size, colour).save(path)
    return path


def test_each_image_gets_its_top_classes_most_probable_first(run_dir: Path, tmp_path: Path) -> None:
    files = [image(tmp_path, "r.png", (230, 20, 20)), image(tmp_path, "b.jpg", (10, 30, 220))]
    predictions = Predictor(run_dir / "model").predict(files, top_k=2)
    assert [p.top[0][0] for p in predictions] == ["red", "blue"]
    for p in predictions:
        assert len(p.top) == 2 and p.top[0][1] > p.top[1][1] > 0


def test_predictions_equal_the_model_in_memory_on_the_same_pixels(run_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    noise = (torch.rand(48, 64, 3) * 255).to(torch.uint8).numpy()
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path)
    expected = colour_net()(image_to_input(Image.open(path), PRE)[None]).softmax(1)[0]
    top = Predictor(run_dir / "model").predict([path], top_k=3)[0].top
    assert {label: p for label, p in top} == pytest.approx(dict(zip(LABELS, expected.tolist())), abs=1e-6)


def test_inputs_follow_preprocess_json(tmp_path: Path) -> None:
    x = image_to_input(Image.new("RGB", (90, 45), (128, 0, 255)), PRE)
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([(128 / 255 - 0.5) / 0.25, -2.0, 2.0]))


def test_predict_command_prints_json_per_image(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    green = image(tmp_path, "g.png", (0, 200, 0))
    assert main(["predict", str(run_dir), str(green), "--json", "--top", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"file": str(green), "top": [{"label": "green", "probability": pytest.approx(1.0, abs=0.1)}]}
    ]


def test_predict_command_names_an_unreadable_image(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert main(["predict", str(run_dir), str(broken)]) == 1
    assert capsys.readouterr().err.startswith(f"python -m core predict: cannot read image {broken}")


def test_predict_command_refuses_a_folder_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(tmp_path), str(image(tmp_path, "x.png", (1, 2, 3)))]) == 1
    assert "lacks model.pt2" in capsys.readouterr().err


def test_inputs_match_what_validation_saw_during_training(tmp_path: Path) -> None:
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 18), size=(200, 300), mode="bilinear")
    path = tmp_path / "photo.png"
    Image.fromarray((smooth[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()).save(path)
    cached = torch.from_numpy(square_pixels(path, PRE.resize).copy())[None]
    validation = to_model_input(cached, PRE, train=False)[0]
    torch.testing.assert_close(image_to_input(Image.open(path), PRE), validation, atol=2 / 255 / 0.25, rtol=0)


def seen_by_model(run_dir: Path, source: object) -> torch.Tensor:
    """The input the exported model receives for ``source``."""
    predictor = Predictor(run_dir / "model")
    seen = []
    probabilities = predictor.probabilities
    predictor.probabilities = lambda inputs, *engine: seen.append(inputs) or probabilities(inputs, *engine)
    predictor.predict([source])
    return seen[0][0]


def transparent_red(path: Path) -> None:
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(path)


def deep_grey(path: Path) -> None:
    """A 16-bit PNG whose left half is a quarter of its right half's brightness."""
    pixels = np.full((40, 40), 4000, dtype=np.uint16)
    pixels[:, :20] = 1000
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("make", [transparent_red, deep_grey], ids=["transparent-rgba", "16-bit"])
@pytest.mark.parametrize("kind", ["path", "bytes", "pil"])
def test_unusual_modes_reach_the_model_as_training_saw_them(
    run_dir: Path, tmp_path: Path, make: Callable[[Path], None], kind: str
) -> None:
    path = tmp_path / "odd.png"
    make(path)
    source = {"path": path, "bytes": path.read_bytes(), "pil": Image.open(path)}[kind]
    cached = torch.from_numpy(square_pixels(path, PRE.resize).copy())[None]
    validation = to_model_input(cached, PRE, train=False)[0]
    torch.testing.assert_close(seen_by_model(run_dir, source), validation, atol=2 / 255 / 0.25, rtol=0)


def huge_png() -> bytes:
    """A valid PNG whose header claims 20000 x 20000 pixels: Pillow calls it a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    data = buffer.getvalue()
    header = b"IHDR" + struct.pack(">II", 20000, 20000) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


def test_an_image_past_the_pixel_limit_is_a_predict_error(run_dir: Path) -> None:
    with pytest.raises(PredictError, match="cannot read image <bytes>: more than"):
        Predictor(run_dir / "model").predict([huge_png()])


def test_predict_command_refuses_a_decompression_bomb_in_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(huge_png())
    assert main(["predict", str(run_dir), str(bomb)]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"python -m core predict: cannot read image {bomb}: more than")
        and err.count("\n") == 1
    )
