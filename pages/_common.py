"""What the pages share: the draft plan that travels between them, and safe text."""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

DRAFT_PLAN = "draft_plan"
# Markdown that a name could smuggle in: links, images, emphasis, code, headings, HTML-ish tags.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$])")


def draft_plan() -> dict[str, Any]:
    """The plan being put together across pages, in the Plan's JSON shape (a plain dict)."""
    return st.session_state.setdefault(DRAFT_PLAN, {})


def update_draft_plan(**fields: Any) -> None:
    """Record choices for the Train page, and set its (persisted) widgets to match."""
    draft_plan().update(fields)
    for name, value in fields.items():
        st.session_state[f"plan_{name}"] = value


def escape(text: object) -> str:
    """``text`` shown literally in Markdown. Names inside an upload (classes, files) are untrusted
    on a shared server: unescaped, a folder named like a link or an image would render as one."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))
