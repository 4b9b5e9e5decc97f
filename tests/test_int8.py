"""An int8 copy of a run's model: smaller, runnable by onnxruntime alone, checked before it is kept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.artifacts.quantize import INT8_FILE, QuantizeError, export_int8
from core.cli import main
from core.data import ingest
from core.storage import read_json

pytest.importorskip("onnxruntime")

RUN_ALONE = """
import json, sys
import numpy as np
import onnxruntime
crop = json.load(open(sys.argv[2]))["crop"]
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
logits = session.run(None, {"images": np.zeros((3, 3, crop, crop), np.float32)})[0]
print(json.dumps({"shape": list(logits.shape), "torch": "torch" in sys.modules}))
"""


@pytest.fixture
def run_dir(finished_run: Path, lab_home: Path) -> Path:
    """The session's tiny EfficientNet-Lite0 run on the faces sample, copied for this test."""
    return Path(shutil.copytree(finished_run, lab_home / "runs" / finished_run.name))


def test_the_int8_model_runs_in_onnxruntime_alone_agrees_with_fp32_and_is_smaller(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The session's tiny run has 40 validation images: one image is 2.5 points, past the default
    # tolerance, and whether int8 flips one depends on the run. The refusal has its own test.
    assert main(["export", str(run_dir), "--int8", "--max-drop", "0.2", "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["int8"]
    model = run_dir / "model"
    assert check == read_json(model / "int8.json")
    assert check["agreement"] >= 0.9 and check["images"] > 0
    assert check["int8_bytes"] == (model / INT8_FILE).stat().st_size
    assert check["int8_bytes"] < check["fp32_bytes"] / 2 == (model / "model.onnx").stat().st_size / 2
    card = (model / "MODEL_CARD.md").read_text()
    assert card.count("## The int8 copy") == 1 and f"| {check['int8_accuracy']:.1%} |" in card
    assert card.index("## The int8 copy") < card.index("## Provenance")
    ran = subprocess.run(
        [sys.executable, "-c", RUN_ALONE, str(model / INT8_FILE), str(model / "preprocess.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    labels = read_json(model / "labels.json")
    assert json.loads(ran.stdout) == {"shape": [3, len(labels)], "torch": False}


def test_an_int8_model_that_loses_accuracy_is_refused_in_one_line_and_leaves_nothing(
    run_dir: Path, tmp_path: Path
) -> None:
    blank = tmp_path / "blank.png"  # calibrated on a grey square, every activation range collapses
    Image.new("RGB", (80, 80), (128, 128, 128)).save(blank)
    dataset = ingest(read_json(run_dir / "plan.json")["data"])
    validation = [(sample.path, dataset.classes[sample.label]) for sample in dataset.val]
    model = run_dir / "model"
    before = {p.name for p in model.iterdir()}
    card = (model / "MODEL_CARD.md").read_text()
    with pytest.raises(
        QuantizeError, match=r"^int8 refused: validation accuracy .* past the 2\.0% allowed"
    ) as refused:
        export_int8(model, [blank], validation)
    assert "\n" not in str(refused.value)
    # Only the float ONNX file it quantises from is new; the card is as it was.
    assert {p.name for p in model.iterdir()} == before | {"model.onnx"}
    assert (model / "MODEL_CARD.md").read_text() == card
    kept = export_int8(model, [blank], validation, max_drop=1.0)
    assert kept.drop > 0.02 and (model / INT8_FILE).is_file()


def test_a_tolerance_outside_zero_to_one_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", str(tmp_path), "--int8", "--max-drop", "5"])
    assert exited.value.code == 2
    assert "--max-drop: expected a fraction between 0 and 1, got 5.0" in capsys.readouterr().err
