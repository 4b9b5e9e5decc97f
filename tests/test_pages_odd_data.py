"""Data the Train page must cope with: a data set of 16-bit images previews and can be started
from the page; a data root that would open the home folder stops the app, saying why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_pages import APP, TIMEOUT, after_validation, open_page
from PIL import Image
from streamlit.testing.v1 import AppTest


def deep_folder(root: Path) -> None:
    """Two classes of 16-bit greyscale PNGs (mode I;16), dim and bright."""
    for label, level in (("dim", 1000), ("bright", 40000)):
        folder = root / "deep" / label
        folder.mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((24, 24), level + 100 * i, dtype=np.uint16)).save(folder / f"{i}.png")
    assert Image.open(folder / "0.png").mode == "I;16"


def test_a_data_set_of_16_bit_images_previews_and_can_be_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep_folder(tmp_path / "data")
    monkeypatch.setenv("TRANSFER_LAB_DATA_ROOT", str(tmp_path / "data"))
    at = open_page("pages/train.py")
    at.segmented_control(key="train.data_source").set_value("folder").run()
    after_validation(at.text_input(key="train.data_folder").input("deep").run())
    assert not at.exception, at.exception
    grid = [child.proto for child in at.expander[0].children.values() if child.type == "image"]
    previews = [image for images in grid for image in images.imgs]
    assert len(previews) == 10  # every image of both classes (up to 6 a class), as 8-bit pictures
    assert "train.start" in [button.key for button in at.button]


@pytest.mark.parametrize("where", ["above", "inside"])
def test_a_data_root_over_the_home_folder_stops_the_app(
    where: str, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lab_home.parent if where == "above" else lab_home / "datasets"
    monkeypatch.setenv("TRANSFER_LAB_DATA_ROOT", str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert (
        at.error[0].value.startswith("Transfer Lab cannot start")
        and "TRANSFER\\_LAB\\_HOME" in at.error[0].value
    )
    assert not at.sidebar.children and not at.title  # no page, no sidebar
