"""Start the app: ``streamlit run streamlit_app.py`` with deep links that work from the first visit.

Streamlit treats an app with a ``pages/`` folder as an old-style multipage app until the entry
script first calls ``st.navigation``. Until then, a first visitor's deep link (``/train?run=...``
after a restart) would run that page alone, without the app's shell. Our ``pages/`` holds
``st.navigation`` pages only, so we say so before the server starts.
"""

import sys
from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web.cli import main

ENTRY = Path(__file__).resolve().parents[1] / "streamlit_app.py"

if __name__ == "__main__":
    PagesManager.uses_pages_directory = False
    sys.exit(main(["run", str(ENTRY), *sys.argv[1:]], prog_name="streamlit"))
