"""A run followed live: status, progress, ETA, curves, warnings; polled from the run directory.

The page never talks to the worker: it reads ``status.json`` and the new lines of
``events.jsonl`` every second inside a fragment, so other pages and users stay responsive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core import jobs
from core.events import EventReader
from core.jobs import Run, RunState
from pages._common import escape

POLL_SECONDS = 1.0
# How often the live view asks whether the run's worker still lives (jobs.reconcile): often enough
# that a killed worker shows as failed within two seconds, rarely enough to cost nothing.
RECONCILE_SECONDS = 2.0
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/sync:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
    "interrupted": ":material/pause_circle:",
}


@dataclass
class RunView:
    """What the page has learnt of a run so far, folded from its events."""

    reader: EventReader
    epochs: list[dict[str, Any]] = field(default_factory=list)
    last_batch: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def update(self) -> None:
        for event in self.reader.new_events():
            kind = event["type"]
            if kind == "batch":
                self.last_batch = event
            elif kind == "epoch":
                self.epochs.append(event)
            elif kind == "warning":
                self.warnings.append(event["message"])
            elif kind == "error":
                self.errors.append(event["message"])


def show_run(run_id: str) -> None:
    try:
        status = jobs.reconcile(run_id)
    except jobs.RunNotFound:
        st.error(f"No run {escape(repr(run_id)[:60])} here. It may have been deleted.")
        _new_run_button()
        return
    if RunState(status["state"]).final:
        _render(run_id, _view(run_id), status)
    else:
        _live(run_id)
    _new_run_button()


@st.fragment(run_every=POLL_SECONDS)
def _live(run_id: str) -> None:
    status = _settled_status(run_id)
    _render(run_id, _view(run_id), status)
    if RunState(status["state"]).final:
        st.rerun()  # once, to leave the polling fragment for the finished view


def _settled_status(run_id: str) -> dict[str, Any]:
    """The run's status, reconciled with its worker at most every ``RECONCILE_SECONDS``."""
    last = st.session_state.setdefault("reconciled_at", {})
    if time.monotonic() - last.get(run_id, 0.0) < RECONCILE_SECONDS:
        return jobs.status(run_id)
    last[run_id] = time.monotonic()
    return jobs.reconcile(run_id)


def _view(run_id: str) -> RunView:
    views = st.session_state.setdefault("run_views", {})
    if run_id not in views:
        views[run_id] = RunView(EventReader(Run.open(run_id).directory))
    view = views[run_id]
    view.update()
    return view


def _render(run_id: str, view: RunView, status: dict[str, Any]) -> None:
    state = status["state"]
    with st.container(border=True, key="run_status"):
        st.subheader(f"Run {run_id}")
        line = f"**{state}**" + (f": {escape(status['message'])}" if status.get("message") else "")
        if state == "queued" and status.get("queue_position"):
            line = f"**queued**: place {status['queue_position']} in the queue"
        st.markdown(f"{STATE_ICONS.get(state, '')} {line}")
        _progress(view, state)
        if state in ("queued", "running") and st.button("Cancel", key="cancel", icon=":material/stop:"):
            jobs.cancel(run_id)
            st.rerun()
    for message in view.warnings:
        st.warning(escape(message), icon=":material/warning:")
    for message in view.errors:
        st.error(escape(message), icon=":material/error:")
    if view.epochs:
        st.plotly_chart(
            _curves(view.epochs),
            width="stretch",
            key=f"curves_{len(view.epochs)}",
            config={"displayModeBar": False},
        )
    if state == "done":
        st.success("Training finished. See the confusion matrix and download the model on **Results**.")
        st.page_link(
            "pages/results.py", label="Open Results", icon=":material/insights:", query_params={"run": run_id}
        )


def _progress(view: RunView, state: str) -> None:
    batch, epochs = view.last_batch, view.epochs
    if batch is None:
        if state == "running":
            st.caption("Preparing: reading images and building the network...")
        return
    total_epochs = epochs[-1]["epochs"] if epochs else None
    epoch_fraction = batch["step"] / max(batch["steps"], 1)
    st.progress(
        min(epoch_fraction, 1.0), text=f"Epoch {batch['epoch']} · step {batch['step']} of {batch['steps']}"
    )
    if total_epochs:
        done = len(epochs)
        st.progress(done / total_epochs, text=f"{done} of {total_epochs} epochs")
    columns = st.columns(3)
    columns[0].metric("Images / s", f"{batch['images_per_s']:.1f}")
    columns[1].metric("Loss", f"{batch['loss']:.3f}")
    columns[2].metric("ETA", _eta(view, state))


def _eta(view: RunView, state: str) -> str:
    if state != "running" or not view.epochs:
        return "-"
    seconds = [e["seconds"] for e in view.epochs]
    remaining = view.epochs[-1]["epochs"] - len(view.epochs)
    # Later epochs are the better guide: the first one also decodes images and caches features.
    per_epoch = sum(seconds[-3:]) / len(seconds[-3:])
    left = max(0.0, remaining * per_epoch - (time.time() - view.epochs[-1]["time"]))
    return f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"


def _curves(epochs: list[dict[str, Any]]) -> go.Figure:
    x = [e["epoch"] for e in epochs]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=x, y=[e["train_loss"] for e in epochs], name="train loss", mode="lines+markers")
    )
    fig.add_trace(go.Scatter(x=x, y=[e["val_loss"] for e in epochs], name="val loss", mode="lines+markers"))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[e["train_accuracy"] for e in epochs],
            name="train accuracy",
            mode="lines+markers",
            yaxis="y2",
            line={"dash": "dot"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[e["val_accuracy"] for e in epochs],
            name="val accuracy",
            mode="lines+markers",
            yaxis="y2",
            line={"dash": "dot"},
        )
    )
    fig.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title="epoch",
        yaxis={"title": "loss"},
        yaxis2={
            "title": "accuracy",
            "overlaying": "y",
            "side": "right",
            "range": [0, 1.02],
            "tickformat": ".0%",
        },
        legend={"orientation": "h", "y": 1.15},
    )
    return fig


def _new_run_button() -> None:
    if st.button("New run", key="new_run", icon=":material/add:"):
        del st.query_params["run"]
        st.rerun()
