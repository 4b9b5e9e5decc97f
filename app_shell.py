"""Transfer Lab: the app shell, which ``streamlit_app.py`` serves behind its sign-in gate. Each page
lives in ``pages/``; the work is done in ``core/``."""

import threading
from pathlib import Path

import streamlit as st

from core import inert, jobs, storage
from core.housekeeping import retention
from core.jobs import hardware
from pages import _access
from pages._common import run_label

# The icon ships with the app: a Material icon as favicon would be fetched from a font server.
ICON = Path(__file__).resolve().parent / ".streamlit" / "icon.png"
st.set_page_config(page_title="Transfer Lab", page_icon=str(ICON), layout="wide")


@st.cache_resource
def recover_runs_once() -> list[str]:
    """Runs left 'running' by a server that died are marked interrupted, once per server; then
    retention sweeps (and again at most hourly, below)."""
    marked = jobs.recover()
    sweep_if_due(every_s=0)
    return marked


def sweep_if_due(every_s: float = retention.SWEEP_EVERY_S) -> None:
    """Retention's sweep when it is due, in a thread: deleting gigabytes must not hold up a page."""
    if retention.is_due(every_s):
        sweep = threading.Thread(
            target=retention.sweep_if_due, args=(_access.limits(), every_s), name="retention", daemon=True
        )
        sweep.start()


PAGES = [
    st.Page("pages/advisor.py", title="Advisor", icon=":material/explore:", url_path="advisor", default=True),
    st.Page("pages/backbones.py", title="Backbones", icon=":material/hub:", url_path="backbones"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("pages/results.py", title="Results", icon=":material/insights:", url_path="results"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:", url_path="predict"),
]
# Listed for admins only: for anyone else /admin is an unknown page, like any made-up address.
ADMIN = st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:", url_path="admin")

try:
    storage.data_root()  # misconfigured, the instance would open every owner's files: it says so
except ValueError as exc:
    st.error(f"Transfer Lab cannot start: {inert.markdown(exc)}", icon=":material/block:")
    st.stop()
viewer = _access.signed_in()
if viewer is None:  # nothing of the app before sign-in, not even the pages' names
    _access.sign_in()
    st.stop()
pages = [*PAGES, ADMIN] if viewer.admin else PAGES
page = st.navigation(pages)
_access.signed_in_as(viewer)
_access.back_to_the_requested_page(pages, page)
recover_runs_once()
sweep_if_due()
with st.sidebar:
    st.caption(f":material/memory: {hardware.describe()}")
    active = jobs.active_runs(viewer)
    for run in active:
        label = inert.markdown(f"{run_label(run)} · {run.state}")
        st.page_link("pages/train.py", label=label, icon=":material/sync:", query_params={"run": run.run_id})
    if not active:
        st.caption("No active runs.")
    _access.show_share(viewer)
page.run()
