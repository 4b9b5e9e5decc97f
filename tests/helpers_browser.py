"""How the browser tests wait: for the app to have settled, never for a fixed time.

Streamlit reruns the page's script after every widget change, and after a rerun the page holds
the new elements only once the run has finished and the previous run's stale elements have gone.
The app marks its root with the run's state (``data-test-script-state``: ``running`` while a
run goes on, ``notRunning`` after); a script installed in every page (``RUNS_BEGUN``) counts the
runs it has seen begin, so that a test can wait for the run its own action started, however
quickly or slowly the machine gets to it, rather than sleep and hope it has begun. A short run
can begin and end within one update of the frontend and never show ``running`` (the likeliest
cause of a wait for "Upload a zip"'s run that timed out in two of six runs, after the server
became an ``st.App``): a page whose main area reads differently since the action had its run.

A wait ends as soon as its condition holds; its timeout only bounds a failure. Reruns that run
a model take seconds on a quiet machine and ten times that beside other work (load 12 on 2
cores), so the bound is generous: ``WAIT_MS`` for any page, more where the work is known.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# The longest a browser test waits for any one thing the app does. Each wait returns once its
# condition holds: the bound only decides how soon a broken page fails. Beside two CPU-burning
# processes on 2 cores the app's steps take 3 to 5 times as long as on a quiet machine, and with
# torch's threads fighting a load of 12 more than ten times: a first visit that imports torch
# then takes over a minute.
WAIT_MS = 120_000
# Predict's allowance per image of a zip: 4 ms each on a quiet 2-core machine, 13 to 17 beside two
# CPU burners; a load of 12 once made the faces sample's 200 images take over 30 s (150 ms each).
PREDICT_MS_PER_IMAGE = 500

RUNS_BEGUN = """
window.__runsBegun = 0;
new MutationObserver((changes) => {
  for (const change of changes) {
    if (change.target.getAttribute('data-test-script-state') === 'running') window.__runsBegun += 1;
  }
}).observe(document, {attributes: true, attributeFilter: ['data-test-script-state'], subtree: true});
"""

_SETTLED = (
    "document.querySelector(\"[data-testid='stApp']\")?.getAttribute('data-test-script-state') === 'notRunning'"
    " && document.querySelectorAll('[data-stale=\"true\"]').length === 0"
)

# The main area's text, not the sidebar's, whose list of active runs changes on its own.
_TEXT = "(document.querySelector(\"[data-testid='stMain']\")?.innerText ?? '')"


def settle(page, timeout_ms: float = WAIT_MS) -> None:
    """Wait until no run is going on and no stale element is left: each label names one widget."""
    page.wait_for_function(_SETTLED, timeout=timeout_ms)


@contextlib.contextmanager
def rerun(page, timeout_ms: float = WAIT_MS) -> Iterator[None]:
    """``with rerun(page): <an action that reruns the app>``: afterwards the run that the action
    started has begun and finished, and the page shows what it drew."""
    before = page.evaluate(f"[window.__runsBegun, {_TEXT}]")
    yield
    page.wait_for_function(
        f"([runs, text]) => (window.__runsBegun > runs || {_TEXT} !== text) && {_SETTLED}",
        arg=before,
        timeout=timeout_ms,
    )


def main_text(page) -> str:
    """What the page's main area reads, without the sidebar."""
    return page.locator("[data-testid='stMain']").inner_text()


def new_tab(browser, **context_options: object):
    """A page in a fresh browser context (its own cookies), that counts the app's runs and
    waits up to ``WAIT_MS`` for anything; close it with ``tab.context.close()``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, **context_options)
    context.set_default_timeout(WAIT_MS)
    context.add_init_script(RUNS_BEGUN)
    return context.new_page()
