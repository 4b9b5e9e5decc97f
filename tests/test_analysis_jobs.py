"""Analysis as the user meets it: ``python -m core analyze``, its race, and the analysis job."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers_race import analysis_of

from core import jobs
from core.cli import main
from core.data.samples import sample_path
from core.experiments import race
from core.experiments.race import Lane, LaneResult, Race
from core.jobs import analysis
from core.jobs.run import RunState
from core.jobs.table import RunRow

CONTRACT_KEYS = {
    "similarity", "verdict", "evidence", "recommended_case", "backbone", "cut", "backbone_ranking", "stage_scores",
    "plan", "shift_type", "learning_curve", "size",
}  # fmt: skip


def wait_final(run_id: str, timeout: float = 240) -> RunRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = jobs.reconcile(run_id)
        if status.state.final:
            return status
        time.sleep(0.3)
    raise AssertionError(f"{run_id} still {status.state} after {timeout} s")


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
    # The race: the frozen options from the analysis's own fits, and the fine-tunes (a shift of the
    # look brings the surgical one) two seeds each, as ordinary runs anyone can open on Results.
    contenders = {entry["key"]: entry for entry in result["race_contenders"]}
    assert list(contenders) == ["case1", "case2", "case3", "surgical"]
    assert (
        contenders["case1"]["accuracy"] == whole_body["head_accuracy"]["value"]
        and contenders["case1"]["frozen"]
    )
    assert contenders[f"case{result['recommended_case']}"]["advised"]
    assert result["race_outcome"] in ("won", "tied", "lost") and result["race_summary"].startswith(
        "the advised plan"
    )
    assert all(entry["versus_advice"] in ("won", "tied", "lost") for entry in contenders.values())
    runs = jobs.list_runs()
    assert {run.state for run in runs} <= {RunState.DONE, RunState.CANCELLED}
    assert sorted(run.case for run in runs) == [3, 3, 3, 3]
    surgical = [run for run in result["race_runs"] if run["contender"] == "surgical"]
    assert {jobs.Run.open(run["run_id"]).plan_fields()["tune_through"] for run in surgical} == {"_blocks.0"}


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
    # holds the one slot until it is cancelled, however long the analysis takes on a busy machine
    training = jobs.submit({"seconds": 600}, target="tests.helpers_jobs:sleepy")
    try:
        job = analysis.submit_analysis(
            sample_path("faces"), "faces", {"sample": 16, "backbones": ["efficientnet_lite0"]}
        )

        final = wait_final(job)

        assert final.state is RunState.DONE, final.message
        assert jobs.status(training).state is RunState.RUNNING
        assert [run.run_id for run in jobs.list_runs()] == [training]  # jobs stay out of the runs table
        stored = json.loads(jobs.Run.open(job).result_file.read_text())
        assert CONTRACT_KEYS | {"data"} <= stored.keys()  # the folder a race trains on
        assert analysis.analysis_result(job).dataset.name == "faces"
    finally:
        jobs.cancel(training)
        wait_final(training)


def lanes(
    curves: dict[str, tuple[tuple[float, ...], ...]], state: RunState = RunState.DONE
) -> tuple[LaneResult, ...]:
    """One run per curve (validation accuracy after each epoch); a done run scored its last."""
    return tuple(
        LaneResult(
            Lane(key, seed, f"run-{key}-{seed}"),
            state,
            curve[-1] if state is RunState.DONE else None,
            10.0,
            curve,
        )
        for key, per_seed in curves.items()
        for seed, curve in enumerate(per_seed)
    )


def a_race(**analysis: Any) -> Race:
    entries, advised = race.contenders(analysis_of(**analysis))
    return Race("r1", "data", advised, entries, ())


def test_the_contenders_are_the_frozen_options_full_fine_tuning_and_for_the_look_surgery() -> None:
    look = a_race(shift="input")
    assert [c.key for c in look.contenders] == ["case1", "case2", "case3", "surgical"]
    # A frozen score is the analysis's interval, or as wide as its 200 images allow where wider.
    assert look.advised == "case2" and look.contenders[1].score == race.Score(
        0.90, pytest.approx(0.044, abs=1e-3)
    )
    assert look.contenders[3].fields == {"case": 3, "tune_through": "_blocks.0"}
    large = a_race(shift="content", size="large")
    assert [c.key for c in large.contenders] == ["case1", "case2", "case3", "case4"]


def test_halving_drops_a_fine_tune_trailing_by_more_than_the_spread_and_keeps_one_within_it() -> None:
    curves = {
        "case3": ((0.50, 0.80), (0.55, 0.82)),
        "surgical": ((0.52, 0.78), (0.50, 0.83)),  # within the spread of the leader's seeds
        "case4": ((0.30, 0.40), (0.31, 0.42)),  # well behind
    }
    now = race.judged(a_race(size="large"), lanes(curves, state=RunState.RUNNING))

    assert race.to_drop(now) == ["case4"]
    # Judged after the latest epoch that every fine-tune has reached: case 4 kept up in its first.
    behind = lanes({**curves, "case4": ((0.52,), (0.50,))}, state=RunState.RUNNING)
    assert race.to_drop(race.judged(a_race(size="large"), behind)) == []


def test_halving_keeps_a_fine_tune_one_image_behind_however_alike_its_seeds() -> None:
    """Two runs that agree have no spread between them; the images they were measured on still do."""

    def measured_on(val_images: int | None, surgical: float) -> list[str]:
        curves = {"case3": ((1.0,),), "surgical": ((surgical,),)}
        runs = tuple(replace(r, val_images=val_images) for r in lanes(curves, state=RunState.RUNNING))
        return race.to_drop(race.judged(a_race(), runs))

    assert measured_on(40, surgical=0.975) == []  # one image of 40
    assert measured_on(None, surgical=0.975) == ["surgical"]  # counting no images, it would go
    assert measured_on(400, surgical=0.90) == ["surgical"]  # forty images of 400


def test_the_verdict_says_whether_the_advised_plan_won_tied_or_lost() -> None:
    def judged(case3: tuple[float, float]) -> race.Standing:
        runs = lanes({"case3": ((case3[0],), (case3[1],)), "surgical": ((0.5,), (0.52,))})
        dropped = tuple(
            replace(lane, state=RunState.CANCELLED, accuracy=None)
            for lane in lanes({"case4": ((0.3,), (0.32,))})
        )
        return race.judged(a_race(size="large"), runs + dropped)

    won = judged((0.70, 0.72))
    versus = {e.key: e.versus_advice for e in won.to_record().contenders}
    assert versus == {"case1": "lost", "case2": "won", "case3": "lost", "surgical": "lost", "case4": "lost"}
    assert won.summary == "the advised plan (case 2, cut after _blocks.4) won"
    assert won.to_record().contenders[4].dropped_after == 1

    tied = judged((0.87, 0.93))
    assert tied.advised.versus_advice == "tied" and tied.to_record().outcome == "tied"
    assert tied.summary.endswith("tied with case 3, fine-tune all: the gap is within the spread")

    lost = judged((0.97, 0.98))
    assert lost.summary == "the advised plan (case 2, cut after _blocks.4) lost to case 3, fine-tune all"
    assert lost.entries[2].score == race.Score(0.975, pytest.approx(0.01))
