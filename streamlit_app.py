"""Transfer Lab's web server: the app (``app_shell.py`` and its pages) behind its sign-in gate.

``streamlit run streamlit_app.py`` (what ``make run`` does) finds ``app`` here and serves it, so
the gate (``pages/_gate.py``) stands in front of every route of the server. Started as
``streamlit run app_shell.py`` instead, the shell still shows nothing before sign-in, but the
server's own routes would be ungated: don't.
"""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from pages import _gate

# Streamlit runs a folder named ``pages/`` as an old-style multipage app, each page alone without
# the shell (and its sign-in), until the shell first calls ``st.navigation``. Ours holds
# ``st.navigation`` pages only: say so before the first session, so that no address runs a page
# on its own.
PagesManager.uses_pages_directory = False

app = st.App("app_shell.py", routes=_gate.routes(), middleware=_gate.middleware())
