"""Access in a real browser: with a team password nothing but the sign-in shows, the sign-in
outlives a reload and not a sign-out, and a session id taken from one browser gives another
nothing; with an identity provider (a real one, started on 127.0.0.1 by the test), a person
signs in there and sees their own runs, never another's, and claims that are not one verified
address sign nobody in."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers_browser import main_text, new_tab
from helpers_pages import PASSWORD

from core import access
from core.jobs.run import Run, RunRecord
from core.storage import write_json

pytestmark = pytest.mark.browser


def stored_run(home: Path, run_id: str, owner: str) -> None:
    """A finished run in the server's storage, owned by ``owner``."""
    run = Run(home / "runs" / run_id)
    run.directory.mkdir(parents=True)
    write_json(run.plan_file, {"backbone": "resnet18", "case": 1, "data": "/data/faces", "epochs": 1})
    write_json(run.status_file, {"state": "done", "message": "", "submitted": time.time(), "kind": "train"})
    run.write_record(RunRecord(owner=owner, dataset_name="faces"))


@pytest.fixture
def tab(browser) -> Iterator[object]:
    page = new_tab(browser)
    yield page
    page.context.close()


def test_with_a_password_only_the_sign_in_shows_until_signed_in(tab, app_server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    stored_run(home, "aliceRun", "alice")
    env = {access.PASSWORD_HASH_ENV: access.hash_password(PASSWORD)}
    with app_server(home, env=env) as url:
        tab.goto(f"{url}/train?run=aliceRun")
        tab.get_by_role("button", name="Sign in").wait_for()  # the server's own form, not the app
        assert "Train" not in tab.locator("body").inner_text()
        assert "aliceRun" not in tab.locator("body").inner_text()
        assert tab.locator("[data-testid='stSidebarNav']").count() == 0  # no pages listed either

        tab.get_by_role("textbox", name="Your name").fill("bob")
        tab.get_by_role("textbox", name="Team password").fill(PASSWORD)
        tab.get_by_role("button", name="Sign in").click()
        tab.locator("[data-testid='stSidebarNav']").wait_for()
        tab.get_by_text("bob · your runs").wait_for()
        # The deep link's page, where another owner's run is as missing as a made-up one.
        tab.get_by_text("No run 'aliceRun' here").wait_for()
        tab.goto(f"{url}/results")  # the sign-in outlives the page: the browser keeps the cookie
        tab.get_by_text("bob · your runs").wait_for()

        tab.get_by_role("button", name="Sign out").click()
        tab.get_by_role("textbox", name="Team password").wait_for()
        tab.goto(f"{url}/results")  # and signing out forgot it
        tab.get_by_role("textbox", name="Team password").wait_for()


def provider_secrets(identity_provider: str, more_access: str = "") -> Callable[[str], str]:
    """The app's secrets for signing in through the test's identity provider, for the app's URL."""

    def secrets(url: str) -> str:
        return (
            "[auth]\n"
            f'redirect_uri = "{url}/oauth2callback"\n'
            'cookie_secret = "a-cookie-secret-for-the-test-only"\n'
            'client_id = "transfer-lab"\n'
            'client_secret = "test-secret"\n'
            f'server_metadata_url = "{identity_provider}/.well-known/openid-configuration"\n'
            "[access]\n"
            'allow = ["example.com"]\n'
        ) + more_access

    return secrets


def sign_in_at_the_provider(page, url: str, email: str) -> None:
    page.goto(url)
    page.get_by_role("button", name="Sign in").click()
    page.locator("input[name='sub']").fill(email)  # the provider's own page
    page.get_by_role("button", name="Authorize").click()


def test_signed_in_through_the_identity_provider_a_person_sees_their_own_runs_only(
    tab, browser, app_server, identity_provider: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    stored_run(home, "aliceRun", "alice@example.com")
    stored_run(home, "bobRun", "bob@example.com")

    with app_server(home, secrets=provider_secrets(identity_provider)) as url:
        tab.goto(f"{url}/results")
        tab.get_by_role("button", name="Sign in").wait_for()
        assert "Results" not in main_text(tab) and "Run" not in main_text(tab)
        sign_in_at_the_provider(tab, url, "bob@example.com")
        tab.get_by_text("bob@example.com · your runs").wait_for()

        tab.goto(f"{url}/results")  # the sign-in lasts: a new page load keeps it
        tab.get_by_text("This run has no results").wait_for()
        shown = tab.locator("body").inner_text()
        assert "bobRun" in shown and "aliceRun" not in shown
        tab.goto(f"{url}/train?run=aliceRun")
        tab.get_by_text("No run 'aliceRun' here").wait_for()

        stranger = new_tab(browser)  # someone the allow-list does not name
        sign_in_at_the_provider(stranger, url, "eve@other.org")
        stranger.get_by_text("eve@other.org may not use this instance").wait_for()
        assert stranger.locator("[data-testid='stSidebarNav']").count() == 0
        stranger.context.close()


# Records the protocols of every websocket the page opens; with ``window.__resume`` set, opens it
# with that session id, as Streamlit's frontend does when it reconnects to its own session.
WEBSOCKET_SPY = """
const NativeWebSocket = window.WebSocket;
window.WebSocket = function (url, protocols) {
  protocols = Array.from(protocols || []);
  if (window.__resume) { while (protocols.length < 2) protocols.push(''); protocols[2] = window.__resume; }
  window.__protocols = protocols;
  window.__socket = new NativeWebSocket(url, protocols);
  return window.__socket;
};
Object.assign(window.WebSocket, NativeWebSocket);
window.WebSocket.prototype = NativeWebSocket.prototype;
"""


def password_sign_in(page, url: str, name: str) -> None:
    page.goto(url)
    page.get_by_role("textbox", name="Your name").fill(name)
    page.get_by_role("textbox", name="Team password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"{name} · your runs").wait_for()


def test_a_session_id_does_not_carry_the_sign_in_to_another_browser(
    browser, app_server, tmp_path: Path
) -> None:
    """The session id travels in upload URLs: a second browser that resumes the victim's session
    with it is who its own cookie says, never the victim."""
    env = {access.PASSWORD_HASH_ENV: access.hash_password(PASSWORD)}
    with app_server(tmp_path / "home", env=env) as url:
        victim = new_tab(browser)
        victim.context.add_init_script(WEBSOCKET_SPY)
        password_sign_in(victim, url, "bob")
        victim.evaluate("window.__socket.close()")  # the frontend reconnects with its session id
        victim.wait_for_function("(window.__protocols || [])[2]")
        session_id = victim.evaluate("window.__protocols[2]")

        thief = new_tab(browser)
        thief.context.add_init_script(WEBSOCKET_SPY)
        password_sign_in(thief, url, "eve")
        thief.context.add_init_script(f"window.__resume = {session_id!r}")
        thief.reload()
        sidebar = thief.locator("[data-testid='stSidebar']")
        sidebar.get_by_text("· your runs").wait_for()
        assert "eve · your runs" in sidebar.inner_text() and "bob" not in sidebar.inner_text()
        victim.context.close()
        thief.context.close()


def test_the_provider_s_claims_are_checked_strictly(
    browser, app_server, identity_provider: str, tmp_path: Path
) -> None:
    """Each of these signs in at the provider, and none of them into the app; an address the
    provider does not say it verified (no such claim) is trusted, as docs/access.md says."""
    refused = {
        "unverified": {"email": "eve@example.com", "email_verified": "false"},
        "no-local-part": {"email": "example.com", "email_verified": True},
        "two-ats": {"email": "eve@other.org@example.com", "email_verified": True},
        "not-verified": {"email": "eve@example.com", "email_verified": False},
    }
    for sub, claims in refused.items():
        put = urllib.request.Request(
            f"{identity_provider}/users/{sub}",
            json.dumps(claims).encode(),
            {"Content-Type": "application/json"},
            method="PUT",
        )
        urllib.request.urlopen(put).close()

    secrets = provider_secrets(identity_provider, 'admins = ["boss@example.com"]\n')
    with app_server(tmp_path / "home", secrets=secrets) as url:
        boss = new_tab(browser)
        sign_in_at_the_provider(boss, url, "Boss@Example.com ")  # no email_verified: trusted
        boss.get_by_text("boss@example.com · all runs").wait_for()
        # The gate reads the same identity from Streamlit's cookie: an admin's metrics, nobody else's.
        assert boss.evaluate("fetch('/_stcore/metrics').then(r => r.status)") == 200
        assert urllib.request.urlopen(f"{url}/_stcore/health").status == 200
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"{url}/_stcore/metrics")
        boss.context.close()
        for sub in refused:
            tab = new_tab(browser)
            sign_in_at_the_provider(tab, url, sub)
            tab.get_by_text("may not use this instance").wait_for()
            assert tab.locator("[data-testid='stSidebarNav']").count() == 0, sub
            tab.context.close()
