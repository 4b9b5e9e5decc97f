"""Names that came from users are inert everywhere: a data set, class or file named like a link,
an image, a formula or a terminal escape shows as those characters on every page that shows
names (sidebar, Train's run card, Results, Predict, Admin), in the predictions CSV and on the
command line."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from helpers_jobs import FOREVER
from helpers_pages import APP, TIMEOUT
from streamlit.testing.v1 import AppTest

from core import jobs
from core.artifacts.batch import predict_many, to_csv
from core.artifacts.predict import Predictor
from core.data.samples import sample_path
from core.jobs.run import Run

ROOT = Path(__file__).resolve().parents[1]
# What a viewer's browser would fetch or follow, and what a terminal or a bidi renderer acts on.
LINK = "http://host/"
ACTIVE = ("\x1b", "\u202e")
HOSTILE_NAME = f"![t]({LINK}img.png) [relogin]({LINK}phish) \x1b[2J\u202egnp.exe"
HOSTILE_CLASSES = {
    "face": f'=HYPERLINK("{LINK}phish","x")',
    "not_face": f"@SUM(1) [relogin]({LINK}phish)\x1b[31m\u202e",
}
HOSTILE_FILE = f"+cmd [x]({LINK}f) \u202egnp.png"
FORMULA_STARTS = tuple("=+-@")
# Proto fields whose text Streamlit shows as plain text (a select box's choices), not Markdown.
PLAIN_FIELDS = {"options", "default", "value", "rawValue"}

pytestmark = pytest.mark.usefixtures("home")


def _renamed(value: Any) -> Any:
    """``value`` (parsed JSON) with every class name, as a value or as a key, made hostile."""
    if isinstance(value, dict):
        return {HOSTILE_CLASSES.get(key, key): _renamed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item) for item in value]
    return HOSTILE_CLASSES.get(value, value) if isinstance(value, str) else value


@pytest.fixture
def hostile_run(finished_run: Path, lab_home: Path) -> str:
    """The finished faces run, its data set, classes and a misclassified file named to attack."""
    run = Run(lab_home / "runs" / finished_run.name)
    shutil.copytree(finished_run, run.directory)
    run.write_record(run.record().__class__(dataset_name=HOSTILE_NAME))
    labels = run.model_dir / "labels.json"
    labels.write_text(json.dumps(_renamed(json.loads(labels.read_text()))))
    metrics = _renamed(run.metrics())
    metrics["top_losses"] = [
        {"file": HOSTILE_FILE, "true": HOSTILE_CLASSES["face"], "predicted": HOSTILE_CLASSES["not_face"]}
        | {"confidence": 0.9, "loss": 2.3}
    ]
    run.metrics_file.write_text(json.dumps(metrics))
    return run.id


def _texts(message: dict[str, Any], plain: bool = False) -> Iterator[tuple[str, bool]]:
    """Every string in a rendered element's proto, and whether Streamlit shows it as plain text."""
    for key, value in message.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                yield from _texts(item, plain or key in PLAIN_FIELDS)
            elif isinstance(item, str):
                yield item, plain or key in PLAIN_FIELDS


def shown(at: AppTest) -> list[tuple[str, bool]]:
    """The text of every element on the page and in the sidebar, as (text, plain)."""
    found, nodes = [], [at._tree]
    while nodes:
        node = nodes.pop()
        nodes += list(getattr(node, "children", {}).values())
        proto = getattr(node, "proto", None)
        if proto is not None and not hasattr(node, "children"):
            found += list(_texts(MessageToDict(proto)))
    return found


def assert_inert(at: AppTest, page: str) -> None:
    texts = shown(at)
    assert any("relogin" in text for text, _ in texts), f"{page} shows no hostile name"
    for text, plain in texts:
        assert not any(ch in text for ch in ACTIVE), f"{page}: {text!r}"
        assert plain or LINK not in text, f"{page} renders a name as Markdown: {text!r}"


def test_hostile_names_show_as_text_on_every_page(hostile_run: str) -> None:
    jobs.submit({}, target=FOREVER, queued=False, dataset_name=HOSTILE_NAME)  # in every sidebar
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = hostile_run
    at.run()
    # The sidebar is the shell's, the same on every page (AppTest keeps it for the first page alone).
    [active] = [text for text, _ in shown(at) if text.endswith(("· queued", "· running"))]
    assert "relogin" in active
    assert_inert(at, "the sidebar")
    for page in ("pages/train.py", "pages/results.py", "pages/predict.py", "pages/admin.py"):
        at.switch_page(page).run()
        assert not at.exception, at.exception
        assert_inert(at, page)


def hostile_folder(tmp_path: Path) -> Path:
    """Two faces under file names that attack a spreadsheet, a terminal and a reader."""
    folder = tmp_path / "batch"
    folder.mkdir()
    faces = zipfile.ZipFile(sample_path("faces"))
    (folder / HOSTILE_FILE.replace("/", "_")).write_bytes(faces.read("face/000.png"))
    (folder / "=1+2\x1b[31m.png").write_bytes(faces.read("face/001.png"))
    return folder


def test_the_predictions_csv_holds_no_formula_and_no_escape(hostile_run: str, tmp_path: Path) -> None:
    run = Run.open(hostile_run)
    rows = predict_many(Predictor(run.model_dir), hostile_folder(tmp_path))
    cells = [cell for line in csv.reader(io.StringIO(to_csv(rows))) for cell in line]
    assert any(HOSTILE_CLASSES["face"] in cell for cell in cells)  # the names are there, as text
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    assert not [cell for cell in cells if any(ch in cell for ch in ACTIVE)]


def test_the_command_line_prints_hostile_names_as_text(hostile_run: str, tmp_path: Path) -> None:
    run = Run.open(hostile_run)
    shown_lines = subprocess.run(
        [sys.executable, "-m", "core", "predict", str(run.directory), str(hostile_folder(tmp_path))],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "relogin" in shown_lines and "\\u202e" in shown_lines  # written out, not obeyed
    assert not any(ch in shown_lines for ch in ACTIVE)
