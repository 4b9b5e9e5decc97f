"""Images that look mislabelled: found on held-out probabilities, excluded from the next run."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from helpers_jobs import colour_folders
from helpers_pages import open_page
from torch import nn

from core import inert, jobs
from core.artifacts import bundle
from core.cli import main
from core.data import ingest
from core.data.samples import sample_path
from core.training import head
from core.training.plan import Plan, PlanError
from core.training.suspects import OUT_OF_FOLD, Suspect, Suspects, find_suspects

FLIPPED_SHARE = 0.05


def generated_features(
    classes: int = 4, per_class: int = 60, width: int = 24
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a small generated set: one noisy cluster per class, as a frozen body gives."""
    generator = torch.Generator().manual_seed(0)
    centres = 2.0 * torch.randn(classes, width, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + torch.randn(len(labels), width, generator=generator), labels


def test_most_flipped_labels_are_listed_with_fewer_false_alarms_than_flips() -> None:
    features, truth = generated_features()
    flipped = torch.randperm(len(truth), generator=torch.Generator().manual_seed(1))[
        : round(FLIPPED_SHARE * len(truth))
    ]
    given = truth.clone()
    given[flipped] = (truth[flipped] + 1) % 4
    layer = nn.Sequential(head.Standardise().fit(features), nn.Linear(features.shape[1], 4))
    choice = head.choose_weight_decay(layer, features, given, len(given))
    files = [f"{int(label)}/{i}.png" for i, label in enumerate(given)]

    suspects = find_suspects(choice.held_out.numpy(), given.tolist(), files, list("abcd"), OUT_OF_FOLD)

    listed = {files.index(name) for name in suspects.files}
    caught = listed & set(flipped.tolist())
    assert len(caught) >= len(flipped) / 2
    assert len(listed - caught) < len(flipped)
    first = suspects.images[0]
    assert first.suggested != first.given and first.suggested_probability > first.given_probability


def test_suspects_read_back_as_written(tmp_path: Path) -> None:
    labels = torch.arange(2).repeat_interleave(20)
    probabilities = torch.nn.functional.one_hot(labels, 2).float() * 0.8 + 0.1
    probabilities[0] = torch.tensor([0.05, 0.95])  # a class-0 image the model is sure is class 1
    found = find_suspects(
        probabilities.numpy(), labels.tolist(), [f"{i}.png" for i in range(40)], ["a", "b"], "x"
    )

    found.write(tmp_path)

    assert Suspects.read(tmp_path) == found
    assert found.files == ["0.png"]
    assert found.images[0].given == "a" and found.images[0].suggested == "b"


def test_excluded_files_are_absent_from_every_split_and_the_rest_keep_theirs(tmp_path: Path) -> None:
    data = colour_folders(tmp_path / "colours")
    before = ingest(data, seed=3)
    dropped = [before.train[0].name, before.val[0].name]

    after = ingest(data, seed=3, exclude=dropped)

    def names(samples: list) -> list[str]:
        return [s.name for s in samples]

    assert not set(dropped) & set(names(after.train) + names(after.val) + names(after.test))
    assert names(after.train) == [n for n in names(before.train) if n not in dropped]
    assert names(after.val) == [n for n in names(before.val) if n not in dropped]
    assert "2 file(s) excluded by the plan" in after.report.split


def test_the_plan_records_the_excluded_files_and_refuses_anything_else() -> None:
    plan = Plan.from_dict({"exclude": ["red/0.png", "blue/3.png"]})

    stored = json.loads(json.dumps(plan.to_dict()))

    assert stored["exclude"] == ["red/0.png", "blue/3.png"]
    assert Plan.from_stored(stored) == plan
    assert Plan.from_stored({k: v for k, v in stored.items() if k != "exclude"}).exclude == ()
    with pytest.raises(PlanError, match="exclude must be a list of file names"):
        Plan.from_dict({"exclude": "red/0.png"})


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_a_finished_run_lists_its_suspects_and_its_card_carries_its_metrics(finished_run: Path) -> None:
    metrics = json.loads((finished_run / "metrics.json").read_text())
    card = (finished_run / "model" / "MODEL_CARD.md").read_text()

    meta = front_matter(card)
    assert {"license", "tags", "datasets", "metrics", "model-index"} <= meta.keys()
    [entry] = meta["model-index"]
    [validation] = entry["results"]
    assert validation["task"]["type"] == "image-classification"
    assert validation["metrics"][0] == {
        "type": "accuracy",
        "value": metrics["best_val_accuracy"],
        "name": "Validation accuracy",
    }
    interval = metrics["val_interval"]
    assert interval["low"] <= metrics["best_val_accuracy"] <= interval["high"]
    assert f"{metrics['best_val_accuracy']:.2%} on {interval['images']} images" in card
    assert f"interval {interval['low']:.2%} to {interval['high']:.2%}" in card
    assert f"would score {metrics['majority_rate']:.2%}" in card
    for label, row in metrics["per_class"].items():
        assert f"| {label} | {row['precision']:.2%} | {row['recall']:.2%} |" in card
    assert Suspects.read(finished_run).source == OUT_OF_FOLD


def test_the_downloaded_bundle_is_a_hub_repository_whose_readme_is_the_card(finished_run: Path) -> None:
    folder = bundle.bundle_folder(finished_run)
    with zipfile.ZipFile(io.BytesIO(bundle.model_bundle(finished_run))) as archive:
        readme = archive.read(f"{folder}/README.md").decode()
        card = archive.read(f"{folder}/MODEL_CARD.md").decode()

    assert readme == card
    assert front_matter(readme)["pipeline_tag"] == "image-classification"


def test_inspect_lists_a_runs_suspects_and_refuses_a_folder_without_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = Suspects(OUT_OF_FOLD, 40, (Suspect("cats/7.jpg", "cats", "dogs", 0.08, 0.9),))
    written.write(tmp_path)

    assert main(["inspect", str(tmp_path), "--suspects", "--json"]) == 0
    assert Suspects.from_dict(json.loads(capsys.readouterr().out)) == written
    assert main(["inspect", str(tmp_path), "--suspects"]) == 0
    assert "cats/7.jpg: labelled cats (8%), looks like dogs (90%)" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "elsewhere"), "--suspects"]) == 1
    assert "has no suspects.json" in capsys.readouterr().err


def test_results_shows_the_suspects_and_trains_the_next_run_without_them(
    finished_run: Path, lab_home: Path
) -> None:
    shutil.copytree(finished_run, lab_home / "runs" / finished_run.name)
    files = [s.name for s in ingest(sample_path("faces")).train[:2]]
    rows = tuple(Suspect(name, "face", "not_face", 0.1, 0.9) for name in files)
    Suspects(OUT_OF_FOLD, 160, rows).write(lab_home / "runs" / finished_run.name)

    at = open_page("pages/results.py")
    assert not at.exception
    shown = f"looks like **not\\_face** (90%) · {inert.markdown(files[0])}"
    assert any(shown in c.value for c in at.caption), [c.value for c in at.caption]
    at.button(key="results.drop_suspects").click().run()
    rerun = next(r.run_id for r in jobs.list_runs() if r.run_id != finished_run.name)
    try:
        plan = json.loads((lab_home / "runs" / rerun / "plan.json").read_text())
        assert plan["exclude"] == sorted(files) and plan["data"] == str(sample_path("faces"))
        assert at.title[0].value == "Train"
        shown = open_page("pages/results.py", run=rerun)
        assert any("2 images left out" in c.value for c in shown.caption), [c.value for c in shown.caption]
    finally:
        jobs.cancel(rerun)
