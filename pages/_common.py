"""What the pages share: the values one page hands on to another, and how runs are named.

Widget keys are per page (``advisor.images``, ``train.plan_case``): no page reads or sets another
page's widgets. What travels between pages is here, under ``handoff.`` names, each written by the
page that decides it and read by the page that uses it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from core import inert
from core.advice import cases
from core.analysis.record import AnalysisRecord
from core.models import catalog
from core.storage import read_json
from core.training.plan import Plan
from core.training.resizing import size_schedule

if TYPE_CHECKING:
    from core.jobs import RunRow

DRAFT_PLAN = "handoff.draft_plan"  # the plan put together across pages (Advisor, Backbones)
DRAFT_CHANGES = "handoff.draft_changes"  # its fields set since the Train page last took them
ADVISOR_ANSWERS = "handoff.advisor_answers"  # what the Advisor was told, when its plan was taken
MEASURED = "handoff.measured_similarity"  # data set sha256 -> what the Advisor's analysis measured
FOCUS_RUN = "handoff.focus_run"  # the run the user last looked at: Predict opens on it
_SHA256 = re.compile(r"[0-9a-f]{64}")


def draft_plan() -> dict[str, Any]:
    """The plan being put together across pages, in the Plan's JSON shape (a plain dict)."""
    return st.session_state.setdefault(DRAFT_PLAN, {})


def update_draft_plan(**fields: Any) -> None:
    """Record choices for the Train page, whose widgets take them when it next opens."""
    draft_plan().update(fields)
    st.session_state.setdefault(DRAFT_CHANGES, {}).update(fields)


def take_draft_changes() -> dict[str, Any]:
    """The draft's fields set since the last call, once: the Train page sets its widgets to them,
    so that a choice handed on replaces the one made there before."""
    return st.session_state.pop(DRAFT_CHANGES, {})


@dataclass(frozen=True)
class AdvisorAnswers:
    """What the user told the Advisor when they took its plan: Train starts its similarity
    question from the answer, and compares the data set's real size with the one told."""

    images: int
    similarity: str


def hand_on_advisor_answers(answers: AdvisorAnswers) -> None:
    st.session_state[ADVISOR_ANSWERS] = answers


def advisor_answers() -> AdvisorAnswers | None:
    """The Advisor's answers, if its plan was taken in this session."""
    return st.session_state.get(ADVISOR_ANSWERS)


def record_measurement(sha256: str, analysis: AnalysisRecord) -> None:
    """Keep an analysis (its verdict, measured size and the numbers behind them) for the session,
    so that Train's reason line says what the Advisor said."""
    st.session_state.setdefault(MEASURED, {})[sha256] = analysis


def measurement(sha256: str) -> AnalysisRecord | None:
    """The analysis measured for this data set in this session, if any."""
    return st.session_state.get(MEASURED, {}).get(sha256)


def data_name(row: RunRow) -> str:
    """What people call a run's data: the name recorded when it started (an upload's file
    name); for older runs the data's folder or zip name, or an upload's name from its manifest.
    Plain text with nothing a screen acts on (``inert.terminal``): Markdown must escape it again."""
    return inert.terminal(_data_name(row))


def _data_name(row: RunRow) -> str:
    if row.dataset_name and not _SHA256.fullmatch(row.dataset_name):
        return row.dataset_name
    data = Path((row.data or "").rstrip("/"))
    if _SHA256.fullmatch(data.name):  # datasets/<sha256>/: the upload names itself in its manifest
        return (read_json(data / "manifest.json", {}) or {}).get("source", {}).get("name") or "an upload"
    return data.name or "?"


def run_label(row: RunRow) -> str:
    """A run as people tell runs apart: its data, case, backbone, accuracy and start time, not
    its id. ``row`` is a runs-table row (``jobs.list_runs``). Plain text, as ``data_name``."""
    parts = [_data_name(row), f"case {row.case or '?'}", row.backbone or "?"]
    if row.best_val_accuracy is not None:
        parts.append(f"{row.best_val_accuracy:.0%}")
    if row.submitted:
        parts.append(time.strftime("%d %b %H:%M", time.localtime(row.submitted)))
    return inert.terminal(" · ".join(p for p in parts if p))


def focus_run(run_id: str | None = None) -> str | None:
    """Remember ``run_id`` as the run the user is looking at; return the one remembered."""
    if run_id:
        st.session_state[FOCUS_RUN] = run_id
    return st.session_state.get(FOCUS_RUN)


def plan_summary(plan: Mapping[str, Any]) -> str:
    """A plan in one line: "case 3 (fine-tuning) · resnet18 · 5 epochs · 96 px · light augmentation"."""
    case = plan.get("case")
    name = cases.CASES[case].name if case in cases.CASES else "?"
    parts = [f"case {case} ({name})", str(plan.get("backbone", "?"))]
    if case == 2 and plan.get("cut"):
        parts.append(f"cut after {plan['cut']}")
    if plan.get("tune_through"):
        parts.append(f"surgical: body trained through {plan['tune_through']}")
    if plan.get("weights") == "none":
        parts.append("from scratch")
    parts.append(f"{plan.get('epochs', '?')} epochs")
    if case in (3, 4):
        parts.append(f"learning rate {plan.get('lr', '?'):g}" if plan.get("lr") else "")
    if plan.get("image_size"):
        parts.append(_image_sizes(plan))
    augment = plan.get("augment", "light")
    parts.append("no augmentation" if augment == "none" else f"{augment} augmentation")
    if plan.get("exclude"):
        left_out = len(plan["exclude"])
        parts.append(f"{left_out} image{'s' * (left_out > 1)} left out")
    return " · ".join(p for p in parts if p)


def _image_sizes(plan: Mapping[str, Any]) -> str:
    """The size in words ("224 px"), or each epoch's where the early ones train smaller (progressive resizing)."""
    try:
        schedule = size_schedule(Plan.from_stored(plan), catalog.card(str(plan.get("backbone"))))
    except (TypeError, ValueError):  # a plan this version cannot read, an unknown backbone
        return f"{plan['image_size']} px"
    return schedule.describe() if schedule.progressive else f"{schedule.full} px"
