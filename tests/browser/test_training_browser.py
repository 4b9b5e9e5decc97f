"""The whole path in a real browser: upload, train live, inspect, download, predict.

The server's workers sleep ``TRANSFER_LAB_STEP_DELAY`` after each batch (set for the browser
server in conftest), so a tiny run lasts long enough to watch its progress move.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest
from helpers_browser import PREDICT_MS_PER_IMAGE, WAIT_MS, rerun, settle

from core.data.samples import sample_path

pytestmark = pytest.mark.browser
FACES_IMAGES = 200  # in the faces sample


def rezipped(source: Path, target: Path) -> Path:
    """The same images in a zip of other bytes: an upload the app does not know as a sample."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info))
    return target


def progress_text(page) -> str:
    return " | ".join(page.locator(".st-key-train-run_status [data-testid='stProgress']").all_inner_texts())


def test_upload_train_watch_inspect_download_predict(
    page, app_url: str, tmp_path: Path, screenshot_dir: Path | None
) -> None:
    page.goto(f"{app_url}/train")
    page.get_by_text("Training images").wait_for()  # the first visit imports torch
    settle(page)  # a click while the first run still draws starts no new run to wait for
    with rerun(page):
        page.get_by_text("Upload a zip", exact=True).click()
    page.locator("input[type='file']").set_input_files(
        str(rezipped(sample_path("faces"), tmp_path / "faces.zip"))
    )
    page.get_by_text("Training images").wait_for()  # once a job of its own has validated it
    settle(page)
    # An upload of unknown kind: the page says why it chose its case, and asks.
    reason = page.locator(".st-key-train-case_reason").inner_text()
    assert "Case 2" in reason and "we do not know how close your images are to ImageNet" in reason
    with rerun(page):
        page.locator(".st-key-train-case_reason label").filter(has_text="Similar").click()
    assert (
        "you said your images are similar to ImageNet"
        in page.locator(".st-key-train-case_reason").inner_text()
    )
    size = page.get_by_role("spinbutton", name="Image size (px)")
    with rerun(page):
        size.fill("96")
        size.press("Enter")
    with rerun(page):
        page.get_by_text("3: fine-tuning", exact=True).click()  # batch by batch: progress to watch
    epochs = page.get_by_role("spinbutton", name="Epochs")
    with rerun(page):
        epochs.fill("4")
        epochs.press("Enter")
    page.get_by_role("button", name="Start training").click()

    # Live progress: the page redraws from the run directory while the worker trains.
    page.locator(".st-key-train-run_status").wait_for()
    sidebar = page.locator("[data-testid='stSidebar']")
    sidebar.get_by_text("faces.zip · case 3 · efficientnet_lite0", exact=False).wait_for()  # named
    seen: set[str] = set()
    deadline = time.monotonic() + 360
    while time.monotonic() < deadline:
        text = progress_text(page)
        if text and text not in seen:
            seen.add(text)
            training = " 2 of 4 epochs" in f" {text}"
            if screenshot_dir and (len(seen) == 2 or training):  # best: epochs done, their curves
                page.screenshot(path=str(screenshot_dir / "train.png"))
        if page.get_by_text("Total time").count():  # the done card, whether the run worked or not
            break
        time.sleep(0.5)
    assert len(seen) >= 2, f"progress never moved: {seen}"
    assert any("of 4 epochs" in text for text in seen), seen  # the plan as the user set it

    settle(page)  # the live fragment's last drawing gives way to the finished page
    # On a loaded machine the finished page may still be drawing its card: wait for its outcome.
    finished = page.locator(".st-key-train-run_status", has_text="Total time")
    finished.first.wait_for(timeout=WAIT_MS)
    # The live fragment's last card and the finished page's may both stand for a moment.
    page.wait_for_function(
        "document.querySelectorAll('.st-key-train-run_status').length === 1", timeout=WAIT_MS
    )
    card = finished.inner_text()
    assert "faces.zip · case 3 · efficientnet_lite0" in card and "Total time" in card  # named, timed
    page.get_by_text("Open Results").click()
    page.get_by_text("Confusion matrix").wait_for()
    page.locator(".st-key-results-confusion .js-plotly-plot, [data-testid='stPlotlyChart']").first.wait_for()
    if screenshot_dir:
        settle(page)
        page.mouse.move(0, 0)
        page.wait_for_timeout(1500)  # the runs table draws on a canvas after the page settles
        page.screenshot(path=str(screenshot_dir / "results.png"))
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the model").click()
    bundle = tmp_path / "bundle.zip"
    download.value.save_as(bundle)
    names = {name.rsplit("/", 1)[-1] for name in zipfile.ZipFile(bundle).namelist()}
    assert {"model.pt2", "labels.json", "preprocess.json", "README.md"} <= names

    face = tmp_path / "face.png"
    face.write_bytes(zipfile.ZipFile(sample_path("faces")).read("face/000.png"))
    page.get_by_role("button", name="Try this model").click()  # Predict opens on this run
    page.get_by_text("This model was trained on").wait_for()
    chosen = page.locator("[data-testid='stSelectbox']").first.evaluate(
        "e => [e.textContent, ...Array.from(e.querySelectorAll('input'), i => i.value)].join(' ')"
    )
    assert "faces.zip · case 3 · efficientnet_lite0" in chosen, chosen
    page.locator("input[type='file']").first.set_input_files(str(face))
    verdict = page.locator("h3").filter(has_text="face")
    verdict.first.wait_for()
    assert verdict.first.inner_text().strip() in {"face", "not_face"}
    page.locator("[data-testid='stImage'] img").first.wait_for()  # the photo as the model saw it
    page.locator(".js-plotly-plot").first.wait_for()  # and its top classes
    if screenshot_dir:
        page.screenshot(path=str(screenshot_dir / "predict.png"))

    # Many images at once: a zip in, a CSV out.
    page.locator("input[type='file']").nth(1).set_input_files(str(sample_path("faces")))
    csv = page.get_by_role("button", name="Download the predictions (CSV)")
    # Drawn once the batch job has started (a worker that imports torch and loads the model) and
    # classified every image.
    csv.wait_for(timeout=WAIT_MS + FACES_IMAGES * PREDICT_MS_PER_IMAGE)
    with page.expect_download() as download:
        csv.click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("file,predicted,confidence") and len(lines) == FACES_IMAGES + 1
