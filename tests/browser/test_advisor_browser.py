"""A real browser opens the app, moves the inputs and sees the advice change."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_browser import rerun

pytestmark = pytest.mark.browser


def card(page):
    return page.locator(".st-key-advisor-advice_card h3")


def test_advisor_follows_size_and_similarity(page, app_url: str, screenshot_dir: Path | None) -> None:
    page.goto(app_url)
    page.get_by_text("Which transfer-learning approach?").wait_for()
    assert card(page).inner_text().startswith("Case 1")
    # The page icon ships with the app: no request for it leaves the machine.
    icons = page.eval_on_selector_all("link[rel~='icon']", "links => links.map(l => l.href)")
    assert icons and all(href.startswith((app_url, "data:")) for href in icons), icons

    page.get_by_role("slider", name="Images in your data set").press("End")
    page.wait_for_function(
        "document.querySelector('.st-key-advisor-advice_card h3').innerText.startsWith('Case 3')"
    )

    page.locator("[data-testid='stRadio'] label").filter(has_text="Different").click()
    page.wait_for_function(
        "document.querySelector('.st-key-advisor-advice_card h3').innerText.startsWith('Case 4')"
    )
    assert "from scratch" in card(page).inner_text()
    if screenshot_dir:
        page.set_viewport_size({"width": 1400, "height": 1500})
        page.screenshot(path=str(screenshot_dir / "advisor.png"))


def test_backbones_page_shows_the_catalog(page, app_url: str, screenshot_dir: Path | None) -> None:
    page.goto(f"{app_url}/backbones")
    page.get_by_text("Which network?").wait_for()
    page.get_by_text("backbones", exact=False).first.wait_for()
    page.locator("[data-testid='stDataFrame']").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    if screenshot_dir:  # the whole catalog, as a machine with every weight would see it
        with rerun(page):
            page.get_by_test_id("stCheckbox").get_by_text("Ready to train here").click()
        page.wait_for_timeout(1000)  # for the picture alone: the table draws on a canvas after the run
        page.set_viewport_size({"width": 1400, "height": 1500})
        page.screenshot(path=str(screenshot_dir / "backbones.png"))
