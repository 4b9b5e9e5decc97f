"""What the page tests share: a session that took the Advisor's plan, and waiting for the jobs a
page started before looking at it again."""

from __future__ import annotations

from pathlib import Path

from helpers_jobs import wait_for
from streamlit.testing.v1 import AppTest

from core import jobs
from core.jobs.run import RunState
from core.jobs.sources import VALIDATE_SOURCE_KIND

APP = str(Path(__file__).resolve().parents[1] / "app_shell.py")
TIMEOUT = 180  # the first run of a page that imports torch takes a while on 2 cores


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
        lambda: not any(RunState(r["state"]).active for r in jobs.list_runs(kind=VALIDATE_SOURCE_KIND)),
        timeout_s=120,
        what="end of the folder's validation job",
    )
    at.run()
    assert not at.exception, at.exception
    return at
