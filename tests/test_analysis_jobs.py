"""Analysis as the user meets it: ``python -m core analyze``, its race, and the analysis job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core import jobs
from core.cli import main
from core.data.samples import sample_path
from core.experiments.race import CaseResult, Lane, LaneResult, Race, Standing
from core.jobs import analysis

CONTRACT_KEYS = {
    "similarity", "verdict", "evidence", "recommended_case", "backbone", "cut", "backbone_ranking", "stage_scores",
    "plan", "shift_type", "learning_curve", "size",
}  # fmt: skip


def wait_final(run_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = jobs.reconcile(run_id)
        if status.state.final:
            return status
        time.sleep(0.3)
    raise AssertionError(f"{run_id} still {status['state']} after {timeout} s")


def test_analyze_json_has_the_contract_keys_and_the_race_its_winner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["analyze", "textures", "--backbones", "efficientnet_lite0", "--sample", "40", "--json"]
    code = main([*argv, "--race", "1", "--race-image-size", "32"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert CONTRACT_KEYS <= result.keys()
    # Grey texture patches: a shift of the look, which the words and the numbers both say.
    assert result["shift_type"]["kind"] == "input" and "low-level look" in result["shift_type"]["words"]
    # The plan, the matrix's column and the numbers agree; case 2 never cuts at the last stage.
    *stages, whole_body = result["stage_scores"]
    assert whole_body["case"] == 1 and all(
        stage["head_accuracy"]["folds"] == 5 for stage in result["stage_scores"]
    )
    assert result["cut"] in [stage["stage"] for stage in stages[:-1]]
    cut = next(stage for stage in stages if stage["stage"] == result["cut"])
    cut_wins = cut["head_accuracy"]["low"] > whole_body["head_accuracy"]["high"]
    assert result["recommended_case"] == (2 if cut_wins else 1)
    assert result["verdict"] == ("different" if cut_wins else "similar")
    assert result["plan"].startswith(f"Case {result['recommended_case']} ")
    assert [p["fraction"] for p in result["learning_curve"]["points"]] == [0.25, 0.5, 1.0]
    assert [entry["name"] for entry in result["backbone_ranking"]] == ["efficientnet_lite0"]
    assert result["evidence"]["shift_by_depth"][-1] == result["evidence"]["deepest_shift"]
    # The race: three cases, two seeds each, as ordinary runs anyone can open on the Results page.
    assert set(result["race"]) == {"1", "2", "3"} and result["race_judged_on"] == "validation"
    assert all(len(entry["accuracies"]) == 2 for entry in result["race"].values())
    assert result["race_winner"] in (None, 1, 2, 3) and result["race_verdict"]
    runs = jobs.list_runs()
    assert len(runs) == 6 and {run.state for run in runs} == {"done"}
    assert sorted(run.case for run in runs) == [1, 1, 2, 2, 3, 3]


def test_analyze_says_in_words_what_it_measured(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "faces", "--backbones", "efficientnet_lite0", "--sample", "24"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("plan: Case ") and "the new layer scores" in out
    assert "shift: your images differ from ImageNet's in their low-level look" in out
    assert "learning curve: 6 images" in out and "whole body (case 1)" in out
    assert "case 2 would cut at _blocks." in out


def test_analyze_refuses_a_backbone_without_weights_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["analyze", "textures", "--backbones", "resnet152", "--sample", "8"])

    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert "no ImageNet weights on this machine for resnet152" in err and "fetch-weights resnet152" in err


def test_the_analysis_job_runs_beside_a_training_run_and_leaves_its_result(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    training = jobs.submit({"seconds": 60}, target="tests.helpers_jobs:sleepy")  # holds the one slot
    job = analysis.submit_analysis(
        sample_path("faces"), "faces", {"sample": 16, "backbones": ["efficientnet_lite0"]}
    )

    final = wait_final(job)

    assert final.state == "done", final.message
    assert jobs.status(training).state == "running"
    assert [run.run_id for run in jobs.list_runs()] == [training]  # jobs stay out of the runs table
    result = analysis.analysis_result(job)
    assert CONTRACT_KEYS <= result.keys() and result["dataset"]["name"] == "faces"
    jobs.cancel(training)
    wait_final(training)


def standing(accuracies: dict[int, tuple[float, float]], recommended: int = 2) -> Standing:
    lanes = tuple(Lane(case, seed, f"run-{case}-{seed}") for case in accuracies for seed in (0, 1))
    results = tuple(LaneResult(lane, "done", accuracies[lane.case][lane.seed], 10.0) for lane in lanes)
    cases = sorted(
        (CaseResult(case, values, 10.0) for case, values in accuracies.items()), key=lambda c: -c.mean
    )
    return Standing(Race("r1", "data", recommended, lanes), results, tuple(cases), "validation")


def test_a_race_names_its_winner_unless_the_gap_is_within_the_seeds_spread() -> None:
    clear = standing({1: (0.70, 0.72), 2: (0.90, 0.91), 3: (0.60, 0.65)})
    assert clear.winner == 2 and clear.verdict == "case 2 wins (as advised)"

    close = standing({1: (0.86, 0.92), 2: (0.90, 0.91), 3: (0.60, 0.65)})
    assert close.winner is None and close.tied
    assert close.verdict.startswith("a tie between case 2 and case 1")

    against = standing({1: (0.95, 0.96), 2: (0.80, 0.81), 3: (0.60, 0.65)})
    assert against.verdict == "case 1 wins (the advice was case 2)"
