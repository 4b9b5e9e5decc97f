"""The data set report: collapsible so Start stays near, and showing every class."""

from __future__ import annotations

from helpers_pages import open_page
from streamlit.testing.v1 import AppTest


def image_captions(at: AppTest) -> list[str]:
    lists = [child.proto for child in at.expander[0].children.values() if child.type == "image"]
    return [img.caption for images in lists for img in images.imgs]


def test_the_report_folds_away_and_its_grid_shows_every_digit() -> None:
    at = open_page("pages/train.py")
    at.selectbox(key="train.data_sample").set_value("digits").run()
    assert at.expander[0].label == "Images per class, and a few of each"
    assert not at.expander[0].proto.expanded  # folded: Start is a short scroll away
    assert image_captions(at) == [str(d) for d in range(10)]  # more than 8 classes: one of each
