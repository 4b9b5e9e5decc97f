"""What the pages share: the draft plan that travels between them."""

from __future__ import annotations

from typing import Any

import streamlit as st

DRAFT_PLAN = "draft_plan"


def draft_plan() -> dict[str, Any]:
    """The plan being put together across pages, in the Plan's JSON shape (a plain dict)."""
    return st.session_state.setdefault(DRAFT_PLAN, {})


def update_draft_plan(**fields: Any) -> None:
    draft_plan().update(fields)
