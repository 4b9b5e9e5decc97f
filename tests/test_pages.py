"""Every page, headless through Streamlit's AppTest: widgets by key, what the user sees."""

from __future__ import annotations

from helpers_pages import open_page
from streamlit.testing.v1 import AppTest


def card_title(at: AppTest) -> str:
    return at.subheader[0].value


def test_advisor_opens_on_case_one_for_a_small_similar_set() -> None:
    at = open_page()
    assert at.title[0].value == "Which transfer-learning approach?"
    assert card_title(at) == "Case 1: feature extraction"
    assert len(at.get("plotly_chart")) == 2  # the matrix and the network diagram


def test_advisor_follows_every_input() -> None:
    at = open_page()
    at.radio(key="advisor.similarity").set_value("different").run()
    assert card_title(at) == "Case 2: truncated feature extraction"
    at.select_slider(key="advisor.images").set_value(1_000_000).run()
    assert card_title(at) == "Case 4: fine-tuning or training from scratch"
    at.radio(key="advisor.similarity").set_value("unsure").run()
    assert card_title(at) == "Case 3: fine-tuning"
    assert "case 4" in at.info[0].value
    at.select_slider(key="advisor.dividing_line").set_value(5_000_000).run()
    assert card_title(at) == "Case 2: truncated feature extraction"
    assert not at.exception


def test_advisor_refuses_more_classes_than_images() -> None:
    at = open_page()
    at.select_slider(key="advisor.images").set_value(10).run()
    at.select_slider(key="advisor.classes").set_value(50).run()
    assert "cannot cover 50 classes" in at.error[0].value
    assert not at.subheader


def test_use_this_plan_carries_the_case_to_train() -> None:
    at = open_page()
    at.radio(key="advisor.similarity").set_value("different").run()
    at.button(key="advisor.use_plan").click().run()
    assert at.session_state["handoff.draft_plan"]["case"] == 2
    assert at.title[0].value == "Train"
    assert at.radio(key="train.plan_case").value == 2


def test_backbones_table_filters_and_pick_carries_to_train() -> None:
    at = open_page("pages/backbones.py")
    assert at.title[0].value == "Which network?"
    assert at.toggle(key="backbones.available_only").value  # no internet here: opens on what trains
    at.toggle(key="backbones.available_only").set_value(False).run()
    total = at.dataframe[0].value.shape[0]
    assert total >= 81
    at.multiselect(key="backbones.families").set_value(["ResNet"]).run()
    names = at.dataframe[0].value["name"].tolist()
    assert "resnet50" in names and "vgg16" not in names
    at.text_input(key="backbones.query").input("resnet1").run()
    assert set(at.dataframe[0].value["name"]) == {"resnet18", "resnet101", "resnet152", "wide_resnet101_2"}
    at.selectbox(key="backbones.pick").set_value("resnet50").run()
    assert "python -m core fetch-weights resnet50" in at.warning[0].value  # why, before it is taken
    at.button(key="backbones.use_backbone").click().run()
    assert at.session_state["handoff.draft_plan"]["backbone"] == "resnet50"
    assert at.title[0].value == "Train"
    assert at.selectbox(key="train.plan_backbone").value == "resnet50"
    # No internet here: the plan says how to get the weights instead of failing later.
    assert "python -m core fetch-weights resnet50" in at.error[0].value


def test_backbones_offline_filter_keeps_the_offline_backbone() -> None:
    at = open_page("pages/backbones.py")
    table = at.dataframe[0].value
    assert "efficientnet_lite0" in table["name"].tolist()
    assert all(table["on_disk"] | table["offline"])
    assert "need their weights downloaded first" in at.caption[0].value
    at.toggle(key="backbones.available_only").set_value(False).run()
    badges = dict(zip(at.dataframe[0].value["name"], at.dataframe[0].value["weights_here"]))
    assert badges["efficientnet_lite0"] == "ready (in a package)"
    assert badges["vgg16"] == "fetch-weights vgg16"


def test_advisor_inputs_survive_a_visit_to_another_page() -> None:
    at = open_page()
    at.select_slider(key="advisor.images").set_value(500_000).run()
    at.switch_page("pages/backbones.py").run()
    at.switch_page("pages/advisor.py").run()
    assert at.select_slider(key="advisor.images").value == 500_000
    assert card_title(at) == "Case 3: fine-tuning"


def test_the_advisor_caption_follows_not_sure() -> None:
    at = open_page()
    at.radio(key="advisor.similarity").set_value("unsure").run()
    caption = next(c.value for c in at.caption if "data set" in c.value)
    assert caption.startswith("Small data set, closeness to ImageNet not known")
    assert not any("course" in c.value for c in at.caption)
