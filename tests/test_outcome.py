"""One rule says whether a run worked: its best accuracy must clearly beat the majority rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.artifacts.predict import Predictor
from core.data import ingest
from core.training import outcome


def test_a_run_at_the_majority_rate_did_not_work_and_says_what_to_try() -> None:
    judged = outcome.judge(0.52, 0.50, {"case": 3, "epochs": 5, "lr": 1e-3})
    assert not judged.worked and judged.suggest is None
    assert judged.advice == (
        "This run did not work: best validation accuracy 52.0% against 50.0% for always answering "
        "the most common class. What to try: case 4; more epochs (now 5); a higher learning rate (now 0.001)."
    )


def test_case_four_from_imagenet_that_did_not_work_suggests_training_from_scratch() -> None:
    judged = outcome.judge(0.5, 0.5, {"case": 4, "weights": "imagenet"})
    assert judged.suggest == outcome.FROM_SCRATCH
    assert judged.remedies[0] == "training from scratch (weights 'none')"
    assert outcome.judge(0.5, 0.5, {"case": 4, "weights": "none"}).suggest is None


@pytest.mark.parametrize(("case", "other"), [(1, "case 2"), (2, "case 1")])
def test_frozen_cases_suggest_the_other_case_not_a_learning_rate(case: int, other: str) -> None:
    remedies = outcome.judge(0.3, 0.3, {"case": case}).remedies
    assert remedies[0] == other and not any("learning rate" in r for r in remedies)


def test_a_clear_win_worked() -> None:
    assert outcome.judge(0.9, 0.5, {"case": 1}).worked
    assert outcome.judge(0.5 + outcome.SUCCESS_MARGIN, 0.5, {"case": 1}).worked


def test_results_and_predict_agree_on_every_validation_image(finished_run: Path) -> None:
    """The final metrics are the exported model's: its confidence on each top-loss image is
    what Predict says for that image's file."""
    metrics = json.loads((finished_run / "metrics.json").read_text())
    plan = metrics["plan"]
    dataset = ingest(plan["data"], val_fraction=plan["val_fraction"], seed=plan["seed"])
    paths = {s.name or s.path.name: s.path for s in dataset.val}
    rows = metrics["top_losses"]
    predictions = Predictor(finished_run / "model").predict([paths[r["file"]] for r in rows], top_k=1)
    for row, prediction in zip(rows, predictions, strict=True):
        [(label, probability)] = prediction.top
        assert label == row["predicted"]
        assert probability == pytest.approx(row["confidence"], abs=1e-4)
    predicted = Predictor(finished_run / "model").predict([s.path for s in dataset.val], top_k=1)
    right = sum(p.top[0][0] == dataset.classes[s.label] for p, s in zip(predicted, dataset.val))
    assert metrics["best_val_accuracy"] == pytest.approx(right / len(dataset.val))
