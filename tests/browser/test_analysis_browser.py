"""In a real browser: measure a sample data set on the Advisor, then train with the measured plan."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers_browser import WAIT_MS, settle

pytestmark = pytest.mark.browser


def test_measure_a_sample_and_carry_the_plan_to_train(
    page, app_url: str, screenshot_dir: Path | None
) -> None:
    page.goto(app_url)
    page.get_by_text("Which transfer-learning approach?").wait_for()
    page.get_by_text("Measure my data", exact=True).click()
    page.get_by_role("button", name="Analyse my data").wait_for()  # the first visit imports torch
    settle(page)
    # 20 images: a quick analysis. The slider is in a form: nothing reruns before the button.
    page.get_by_role("slider", name="Images to analyse").press("Home")
    page.get_by_role("button", name="Analyse my data").click()

    # The job runs in its own process; the page follows it, then shows the numbers.
    page.get_by_text("Shift from ImageNet", exact=True).wait_for(
        timeout=2 * WAIT_MS
    )  # the analysis takes longest
    assert "?analysis=" in page.url
    page.locator(".js-plotly-plot").nth(4).wait_for()
    headline = page.locator("h3").filter(has_text="case").first.inner_text()
    case, name = re.search(r"case (\d), ([a-z -]+)", headline).groups()
    # 200 small grey crops: the look differs from ImageNet's, and the plan says which frozen option won.
    page.get_by_text("in their low-level look").first.wait_for()
    page.get_by_text(f"Case {case} ({name})").first.wait_for()
    if screenshot_dir:
        page.set_viewport_size({"width": 1400, "height": 1600})
        settle(page)
        page.screenshot(path=str(screenshot_dir / "analysis.png"))

    # A reload finds the same analysis again.
    page.reload()
    page.get_by_text("Shift from ImageNet", exact=True).wait_for()

    page.get_by_role("button", name="Use this plan").click()
    page.get_by_text("Training images").wait_for()
    assert page.url.rstrip("/").endswith("/train")
    assert page.get_by_role("radio", name=f"{case}: {name}").is_checked()
    page.get_by_text("measure as small").first.wait_for()
