"""The Admin page in a real browser: an admin who follows a link to /admin lands on it after
signing in; anyone else who types the address gets the app's default page, and no Admin in the
page list."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_browser import main_text, new_tab
from helpers_pages import PASSWORD
from helpers_stored import sha, stored_dataset, stored_run

from core import access, storage

pytestmark = pytest.mark.browser


def signed_in_at_admin(browser, url: str, name: str):
    """A fresh browser tab that opened ``/admin`` and signed in as ``name``."""
    tab = new_tab(browser)
    tab.goto(f"{url}/admin")
    tab.get_by_role("textbox", name="Your name").fill(name)
    tab.get_by_role("textbox", name="Team password").fill(PASSWORD)
    tab.get_by_role("button", name="Sign in").click()
    tab.locator("[data-testid='stSidebarNav']").wait_for()
    return tab


def test_only_an_admin_reaches_the_admin_page_by_its_address(
    browser, app_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, screenshot_dir: Path | None
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv(storage.HOME_ENV, str(home))
    for run_id, owner, days in (("20261120-101500-ab12", "ann", 9), ("20261128-164000-cd34", "boss", 1)):
        stored_run(run_id, finished_days_ago=days, owner=owner)
    stored_dataset(sha("a"), {"ann": 9, "boss": 1})
    env = {access.PASSWORD_HASH_ENV: access.hash_password(PASSWORD), access.ADMINS_ENV: "boss"}
    with app_server(home, env=env) as url:
        tab = signed_in_at_admin(browser, url, "ann")
        tab.get_by_role("heading", name="Which transfer-learning approach?").wait_for()
        assert "Admin" not in tab.locator("[data-testid='stSidebarNav']").inner_text()
        assert "Disk" not in main_text(tab)

        tab.context.close()
        tab = signed_in_at_admin(browser, url, "boss")
        tab.get_by_role("heading", name="Admin").wait_for()
        tab.get_by_text("Queue and workers").wait_for()
        assert "Admin" in tab.locator("[data-testid='stSidebarNav']").inner_text()
        tab.locator("[data-testid='stPlotlyChart']").first.wait_for()  # the disk per owner: there is some
        assert "Transfer Lab's data\n\n0 B" not in main_text(tab)
        if screenshot_dir:
            tab.screenshot(path=str(screenshot_dir / "admin.png"))
        tab.context.close()
