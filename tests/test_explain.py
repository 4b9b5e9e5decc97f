"""Heatmaps: Grad-CAM finds what carries the class, for every family, from the command line and
in a job whose overlays Results shows.

The corner task trains a small ResNet for a few steps on generated images whose only clue is one
corner's colour: a heatmap that is right must lie in that corner.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_jobs import wait_for
from helpers_models import REPRESENTATIVES, input_for, materialise, on_meta
from helpers_pages import open_page
from PIL import Image

from core import jobs
from core.artifacts.card import ModelCard
from core.artifacts.export import export_model
from core.artifacts.predict import image_to_input
from core.cli import main
from core.explain.heatmap import Explainer, ExplainError
from core.explain.layer import explained_layer
from core.jobs.explanations import CLASS_SAMPLE, EXPLAINING, explanations
from core.jobs.run import Run
from core.models.adapt import build_model
from core.models.backbones import card, resolve
from core.models.preprocess import Preprocess
from core.storage import write_json
from core.training.events import read_events
from pages._heatmaps import PER_CLASS, RESULTS_JOBS

SIDE = 64  # pixels: ResNet-18's last stage is a 2 x 2 map, one cell per quadrant
CORNER = 20  # pixels of the top-left corner that carry the class
CLASSES = ("blue", "red")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def corner_image(label: int, generator: np.random.Generator) -> Image.Image:
    """Grey noise everywhere; the top-left corner blue (0) or red (1)."""
    pixels = generator.integers(0, 256, (SIDE, SIDE, 1), dtype=np.uint8).repeat(3, axis=2)
    pixels[:CORNER, :CORNER] = (40, 40, 220) if label == 0 else (220, 40, 40)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def corner_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run's folder (plan and exported model) of a ResNet-18 trained on the corner task."""
    torch.manual_seed(0)
    generator = np.random.default_rng(0)
    pre = Preprocess(resize=SIDE, crop=SIDE)
    model = build_model(resolve("resnet18"), 4, len(CLASSES), weights="none")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(30):
        labels = torch.randint(0, len(CLASSES), (16,))
        inputs = torch.stack([image_to_input(corner_image(int(c), generator), pre) for c in labels])
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    run = tmp_path_factory.mktemp("corner-run")
    write_json(run / "plan.json", {"backbone": "resnet18", "case": 4, "cut": None})
    export_model(model, pre, CLASSES, run / "model")
    for label, name in enumerate(CLASSES):
        corner_image(label, generator).save(run / f"{name}.png")
    return run


def test_the_heatmap_of_the_true_class_lies_in_the_corner_that_carries_it(corner_run: Path) -> None:
    explainer = Explainer.of_run(corner_run)
    maps = explainer.explain([corner_run / "blue.png", corner_run / "red.png"])
    assert [m.predicted for m in maps] == list(CLASSES)
    for heatmap in maps:
        assert heatmap.heat.shape == (SIDE, SIDE)
        shares = quadrant_shares(heatmap.heat)
        assert max(shares, key=shares.get) == "top left", shares
        assert shares["top left"] > 1 / 3, shares  # a quadrant is a quarter of the image


def quadrant_shares(heat: np.ndarray) -> dict[str, float]:
    """The share of the heat's mass in each quarter of the image."""
    half = SIDE // 2
    quarters = {
        "top left": heat[:half, :half],
        "top right": heat[:half, half:],
        "bottom left": heat[half:, :half],
        "bottom right": heat[half:, half:],
    }
    return {name: float(q.sum() / heat.sum()) for name, q in quarters.items()}


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line ``python -m core ARGV`` prints when it refuses (and asserts that it does)."""
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_a_class_the_model_lacks_is_refused_naming_the_classes(
    corner_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, out = str(corner_run / "red.png"), str(tmp_path / "heat.png")
    line = refusal(capsys, "explain", str(corner_run), image, "--class", "green", "--out", out)
    assert line.endswith("no class 'green' in this model; choose one of: blue, red")
    with pytest.raises(ExplainError, match="choose one of: blue, red"):
        Explainer.of_run(corner_run).explain([image], label="green")


def test_a_folder_without_a_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refusal(capsys, "explain", str(tmp_path), "photo.png", "--out", str(tmp_path / "heat.png"))
    assert "is it a finished run's folder?" in line


@pytest.mark.parametrize("backbone", REPRESENTATIVES)
def test_every_family_yields_a_heatmap_of_the_input_size(backbone: str) -> None:
    model = materialise(on_meta(backbone, 1, 3))
    inputs = input_for(backbone, 1, device="cpu")
    program = torch.export.export(model, (inputs,)).module()  # as export_model writes it, at batch 1
    layer = explained_layer(card(backbone), 1)
    explainer = Explainer(program, resolve(backbone).preprocess, ["a", "b", "c"], layer)
    heat, probabilities = explainer.heatmaps(inputs, [2])
    assert heat.shape == (1, *inputs.shape[2:])
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert probabilities.shape == (1, 3)


def test_the_cli_writes_an_overlay_of_the_input_size(
    corner_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "heat.png"
    assert (
        main(["explain", str(corner_run), str(corner_run / "red.png"), "--class", "blue", "--out", str(out)])
        == 0
    )
    assert Image.open(out).size == (SIDE, SIDE)
    said = capsys.readouterr().out
    assert "Grad-CAM at layer4" in said and "for blue" in said and "the model answers red" in said


def test_results_asks_a_job_for_heatmaps_of_its_mistakes_and_classes_and_shows_them(
    finished_run: Path, lab_home: Path
) -> None:
    shutil.copytree(finished_run, lab_home / "runs" / finished_run.name)
    # Its validated data set too: the job finds the images it explains there.
    shutil.copytree(finished_run.parents[1] / "datasets", lab_home / "datasets")
    at = open_page("pages/results.py", run=finished_run.name)
    at.button(key="results.heatmaps").click().run()
    [job_id] = at.session_state[RESULTS_JOBS].values()
    assert wait_for(lambda: jobs.reconcile(job_id).state.final, timeout_s=300)
    drawn = explanations(job_id)
    card = ModelCard.read(finished_run / "model")
    classes = [row.truth for row, _ in drawn if row.source == CLASS_SAMPLE]
    assert classes == [label for label in card.labels for _ in range(PER_CLASS)]
    assert all(Image.open(overlay).size == (card.pre.crop, card.pre.crop) for _, overlay in drawn)
    last = [e for e in read_events(Run.open(job_id).directory) if e.type == "progress"][-1]
    assert last.phase == EXPLAINING and last.done == last.total == len(drawn)
    at.run()
    assert not at.exception
    captions = [c.value for c in at.caption if CLASS_SAMPLE in c.value]
    assert len(captions) == len(classes) and all("truly" in c for c in captions)
