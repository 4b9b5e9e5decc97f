"""The decision matrix: the four cases, the dividing line, and what "unsure" means."""

import json

import pytest

from core.advice import cases
from core.advice.cases import DEFAULT_DIVIDING_LINE as LINE
from core.advice.cases import recommend


@pytest.mark.parametrize(
    ("images", "similarity", "case"),
    [
        (500, "similar", 1),
        (500, "different", 2),
        (2_000_000, "similar", 3),
        (2_000_000, "different", 4),
    ],
)
def test_each_cell_of_the_matrix_gives_its_case(images: int, similarity: str, case: int) -> None:
    advice = recommend(images, 10, similarity)
    assert advice.case == case
    assert advice.name == cases.CASES[case].name
    assert advice.alternatives == []  # far from the line and sure of the similarity


def test_the_dividing_line_splits_small_from_large() -> None:
    assert recommend(LINE - 1, 10, "similar").case == 1
    assert recommend(LINE, 10, "similar").case == 3
    assert recommend(LINE - 1, 10, "different").case == 2
    assert recommend(LINE, 10, "different").case == 4


def test_near_the_line_the_other_size_is_an_alternative() -> None:
    just_below = recommend(LINE - 1, 10, "similar")
    just_above = recommend(LINE, 10, "similar")
    assert just_below.alternatives == [3] and just_below.thresholds["near_line"]
    assert just_above.alternatives == [1]
    assert "dividing line" in just_below.rationale
    # Outside the band the alternative disappears.
    assert recommend(int(LINE / cases.NEAR_LINE_FACTOR) - 1, 10, "similar").alternatives == []
    assert recommend(int(LINE * cases.NEAR_LINE_FACTOR), 10, "similar").alternatives == []


def test_the_user_can_move_the_line() -> None:
    assert recommend(5_000, 10, "similar").case == 1
    assert recommend(5_000, 10, "similar", dividing_line=1_000).case == 3
    assert recommend(5_000, 10, "similar", dividing_line=1_000).thresholds["dividing_line"] == 1_000


def test_unsure_takes_the_option_that_holds_either_way() -> None:
    small = recommend(300, 3, "unsure")
    large = recommend(3_000_000, 30, "unsure")
    assert (small.case, small.alternatives) == (2, [1])
    assert (large.case, large.alternatives) == (3, [4])
    assert "not sure" in small.rationale


def test_few_images_per_class_are_flagged() -> None:
    assert "unstable validation accuracy" in recommend(100, 10, "similar").rationale
    assert "unstable" not in recommend(1000, 10, "similar").rationale


def test_advice_has_the_contract_keys_and_is_json() -> None:
    data = recommend(2_000, 5, "different").to_dict()
    assert {"case", "name", "steps", "rationale", "thresholds", "alternatives"} <= data.keys()
    assert json.loads(json.dumps(data)) == data


def test_case_four_carries_the_from_scratch_fallback() -> None:
    steps = " ".join(cases.CASES[4].steps)
    assert "pre-trained" in steps and "from scratch" in steps


def test_cases_describe_each_layer_of_the_demo_network() -> None:
    for case in cases.CASES.values():
        layers = case.to_dict()["layers"]
        assert list(layers) == [*cases.DEMO_LAYERS, "new_fc"]
        assert set(layers.values()) <= set(cases.FATES)
    assert cases.CASES[1].to_dict()["layers"]["conv3"] == "frozen"
    assert cases.CASES[2].to_dict()["layers"]["conv3"] == "removed"
    assert cases.CASES[3].to_dict()["layers"]["conv1"] == "trained"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((100, 5, "maybe"), "unknown similarity 'maybe'"),
        ((100, 1, "similar"), "at least 2 classes"),
        ((3, 5, "similar"), "cannot cover"),
    ],
)
def test_bad_inputs_name_the_problem(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recommend(*args)


def test_cases_module_stays_free_of_torch() -> None:
    import subprocess
    import sys

    code = "import sys, core.advice.cases; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_rationale_never_tells_a_fine_tuning_case_to_freeze() -> None:
    advice = cases.recommend(20_000, 2_000, "similar")  # large, but 10 images per class
    assert advice.case == 3
    assert "freezing more" not in advice.rationale and "try case 1, which freezes it" in advice.rationale
    assert "prefer freezing more" in cases.recommend(200, 20, "similar").rationale  # case 1
