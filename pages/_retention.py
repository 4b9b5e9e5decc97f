"""Retention on the pages: the limits in force, and the line that tells when a run will be deleted."""

from __future__ import annotations

import time

import streamlit as st

from core.housekeeping import retention
from core.jobs import Run, RunStatus
from core.limits import Limits
from pages._access import limits


def kept_until(run: Run, status: RunStatus | None = None) -> None:
    """Under a finished run: until when it is kept, or that it is pinned; nothing without a limit."""
    line = kept_line(run, limits(), status)
    if line:
        st.caption(f":material/auto_delete: {line}")


def kept_line(run: Run, limits_: Limits, status: RunStatus | None = None) -> str:
    """ "Kept until 29 Dec 2026: finished runs are deleted after 30 days. An admin can pin it.";
    "Pinned: kept until unpinned."; "" when runs are kept forever or the run is still active."""
    when = kept_when(run, limits_, status)
    if when is None or retention.is_pinned(run):
        return f"{when}." if when else ""
    days = limits_.keep_runs_days
    return f"{when}: finished runs are deleted after {days:g} day{'' if days == 1 else 's'}. An admin can pin it."


def kept_when(run: Run, limits_: Limits, status: RunStatus | None = None) -> str | None:
    """Until when a finished run is kept, in a few words; None when it is not to be deleted."""
    if limits_.keep_runs_days is None:
        return None
    if retention.is_pinned(run):
        return "Pinned: kept until unpinned"
    expiry = retention.expires_at(run, limits_, status)
    if expiry is None:
        return None
    if expiry <= time.time():
        return "Due for deletion at the next clean-up"
    return f"Kept until {time.strftime('%d %b %Y', time.localtime(expiry))}"
