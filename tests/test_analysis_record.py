"""Stored analysis results read back as records: those of earlier versions, partial ones, damaged ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.analysis.record import AnalysisRecord, read_analysis
from core.storage import Damaged

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "analysis").glob("*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.stem)
def test_every_stored_result_reads_into_the_record_and_writes_back_key_for_key(path: Path) -> None:
    record = read_analysis(path)

    assert isinstance(record, AnalysisRecord)
    assert record.to_dict() == json.loads(path.read_text())


def test_the_faces_result_reads_as_the_page_shows_it() -> None:
    record = read_analysis(FIXTURES[0])

    assert (record.dataset.name, record.advice.case, record.shift_type.kind) == ("faces.zip", 1, "input")
    assert record.planned_stage.whole_body and record.planned_stage.head_accuracy.folds == 5
    assert [point.images for point in record.learning_curve.points] == [6, 12, 24]
    assert record.stage_scores[0].channels == 16 and record.backbone_ranking[0].imagenet_top1 == 75.1
    assert record.runtimes["efficientnet_lite0"].images_per_s == {"torch": 4.1}
    assert record.race is None and record.data is None


def test_a_result_missing_newer_keys_reads_with_defaults_and_ignores_keys_it_does_not_know(
    tmp_path: Path,
) -> None:
    stored = json.loads(FIXTURES[0].read_text())
    for newer in ("shift_type", "learning_curve", "size", "seconds", "runtimes", "cut_note", "plan"):
        del stored[newer]
    del stored["stage_scores"][0]["params_kept"]
    stored["from_a_later_version"] = {"anything": 1}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(stored))

    record = read_analysis(path)

    assert isinstance(record, AnalysisRecord)
    assert record.shift_type.kind == "none" and record.shift_type.words == ""
    assert record.learning_curve.shape == "unknown" and record.learning_curve.points == ()
    assert record.size.size == "small" and record.seconds.cut == 0.0 and record.runtimes == {}
    assert record.stage_scores[0].params_kept is None and record.stage_scores[0].channels == 16
    assert record.advice.case == 1 and record.backbone == "efficientnet_lite0"


def test_a_result_of_the_race_reads_its_standing_from_the_race_keys() -> None:
    stored = json.loads(FIXTURES[0].read_text()) | {
        "race_contenders": [{"key": "case1", "label": "case 1, the whole body", "accuracy": 1.0}],
        "race_advised": "case1",
        "race_summary": "the advised plan (case 1, the whole body) won",
    }

    race = AnalysisRecord.from_dict(stored).race

    assert race is not None and race.advised == "case1" and race.summary.endswith("won")
    assert race.contenders[0].accuracy == 1.0 and race.contenders[0].dropped_after is None
    assert race.runs == () and race.outcome is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"dataset": {"name": "faces"', "not valid JSON"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"stage_scores": "none"}', "stage_scores is a str, expected list"),
        ('{"stage_scores": ["whole body"]}', "not an analysis result"),
        ('{"learning_curve": {"points": [3]}}', "not an analysis result"),
    ],
)
def test_a_file_that_is_not_a_result_reads_as_damaged_saying_why(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "result.json"
    path.write_text(text)

    damaged = read_analysis(path)

    assert isinstance(damaged, Damaged) and problem in str(damaged)


def test_no_file_is_no_result(tmp_path: Path) -> None:
    assert read_analysis(tmp_path / "result.json") is None
