"""How the headless page tests open the app: through ``AppTest``, on a page, with a query, or
signed in as a provider's user; a session that took the Advisor's plan; and waiting for the jobs a
page started before looking at it again.

One bound for every page: the first run of a page that imports torch takes a while on 2 cores,
and a page that trains or evaluates takes longer beside other work. The bound only decides how
soon a broken page fails; a page that works returns as soon as its script has run.
"""

from __future__ import annotations

from pathlib import Path

from helpers_jobs import wait_for
from streamlit.testing.v1 import AppTest

from core import jobs
from core.jobs.kinds import VALIDATE_SOURCE

APP = str(Path(__file__).resolve().parents[1] / "app_shell.py")
TIMEOUT = 180
# The team password the tests configure, as its hash, wherever a password is on.
PASSWORD = "correct horse battery staple"
# An identity provider as secrets.toml names it; AppTest never calls it (see sign_in).
PROVIDER = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "a-cookie-secret-for-the-test-only",
    "client_id": "transfer-lab",
    "client_secret": "test-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


def open_page(page: str | None = None, **query: str) -> AppTest:
    """The app run once with ``query`` in its address, then switched to ``page`` (a path such as
    ``"pages/train.py"``; None: the default page), with no exception raised."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def sign_in(name: str, **query: str) -> AppTest:
    """A session signed in through the identity provider as ``name@example.com``: AppTest seeds
    ``st.user`` as Streamlit's sign-in leaves it (the round trip through a real provider, and
    the team password's form and cookie, are tested against a real server)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets["auth"] = PROVIDER
    at.secrets["access"] = {"allow": ["example.com"]}
    at.user = {"is_logged_in": True, "email": f"{name}@example.com", "email_verified": True}
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def take_the_advisors_plan(similarity: str) -> AppTest:
    """A session that answered the Advisor (``similarity``, the other answers as they open)
    and took its plan: the app is on the Train page."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.radio(key="advisor.similarity").set_value(similarity).run()
    at.button(key="advisor.use_plan").click().run()
    assert not at.exception, at.exception
    return at


def after_validation(at: AppTest) -> AppTest:
    """The page again once the folder it asked for has been checked: a server folder is
    validated by a job, and the page shows its progress until then."""
    wait_for(
        lambda: not any(r.state.active for r in jobs.list_runs(kind=VALIDATE_SOURCE)),
        timeout_s=120,
        what="end of the folder's validation job",
    )
    at.run()
    assert not at.exception, at.exception
    return at
