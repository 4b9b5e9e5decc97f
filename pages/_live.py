"""A run followed live: status, progress, ETA, curves, warnings; polled from the run directory.

The page never talks to the worker: it reads ``status.json`` and the new lines of
``events.jsonl`` every second inside a fragment, so other pages and users stay responsive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from core import inert, jobs
from core.jobs import Run, RunRow, RunState, backend
from core.training import outcome
from core.training.events import EpochEnd, EventReader, read_events
from core.training.progress import RunProgress, duration, queue_wait
from pages._access import viewer
from pages._charts import accuracy_axis, epoch_axis
from pages._common import focus_run, plan_summary, run_label
from pages._retention import kept_until

POLL_SECONDS = 1.0
CONFIRM_CANCEL_AFTER_S = 60.0  # a run that has trained this long asks before it is cancelled
PHASE_LABELS = {"decoding": "Decoding images", "features": "Computing features"}
PHASE_CAPTIONS = {
    "tuning": "Fitting the new layer: choosing its weight decay by cross-validation...",
    "exporting": "Exporting the model...",
}
# How often the live view asks whether the run's worker still lives (jobs.reconcile): often enough
# that a killed worker shows as failed within two seconds, rarely enough to cost nothing.
RECONCILE_SECONDS = 2.0
STATE_ICONS = {
    RunState.QUEUED: ":material/schedule:",
    RunState.RUNNING: ":material/sync:",
    RunState.DONE: ":material/check_circle:",
    RunState.FAILED: ":material/error:",
    RunState.CANCELLED: ":material/cancel:",
    RunState.INTERRUPTED: ":material/pause_circle:",
    RunState.DAMAGED: ":material/broken_image:",
}


@dataclass
class LiveRun:
    """What the page has learnt of a run so far: the events read, folded into its progress."""

    reader: EventReader
    progress: RunProgress

    def update(self) -> RunProgress:
        for event in self.reader.new_events():
            self.progress.update(event)
        return self.progress


def show_run(run_id: str) -> None:
    try:
        status = jobs.reconcile(run_id, viewer())
    except jobs.RunNotFound:
        st.error(f"No run {inert.markdown(repr(run_id)[:60])} here. It may have been deleted.")
        _new_run_button()
        return
    if status.state.final:
        _render(run_id, _view(run_id), status)
    else:
        _live(run_id)
    _new_run_button()


@st.fragment(run_every=POLL_SECONDS)
def _live(run_id: str) -> None:
    status = _settled_status(run_id)
    _render(run_id, _view(run_id), status)
    if status.state.final:
        st.rerun()  # once, to leave the polling fragment for the finished view


def _settled_status(run_id: str) -> RunRow:
    """The run's status, reconciled with its worker at most every ``RECONCILE_SECONDS``."""
    last = st.session_state.setdefault("train.reconciled_at", {})
    if time.monotonic() - last.get(run_id, 0.0) < RECONCILE_SECONDS:
        return jobs.status(run_id, viewer())
    last[run_id] = time.monotonic()
    return jobs.reconcile(run_id, viewer())


def _view(run_id: str) -> RunProgress:
    views = st.session_state.setdefault("train.run_views", {})
    if run_id not in views:
        run = Run.open(run_id, viewer())
        total = run.plan_fields().get("epochs")
        views[run_id] = LiveRun(EventReader(run.directory), RunProgress(total_epochs=total))
    return views[run_id].update()


def _render(run_id: str, view: RunProgress, status: RunRow) -> None:
    state = status.state
    run = Run.open(run_id, viewer())
    focus_run(run_id)
    with st.container(border=True, key="train.run_status"):
        st.subheader(inert.markdown(run_label(status)))
        runs_on = backend.of_run(status).name
        host = f" on {inert.markdown(status.host)}" if status.host else ""
        st.caption(
            f"{inert.markdown(plan_summary(run.plan_fields()))} · run id `{run_id}` · {runs_on} backend{host}"
        )
        line = f"**{state}**" + (f": {inert.markdown(status.message)}" if status.message else "")
        if state is RunState.QUEUED and status.queue_position:
            line = f"**queued**: place {status.queue_position} in the queue · {_estimated_wait(run_id)}"
        st.markdown(f"{STATE_ICONS[state]} {line}")
        if state is RunState.RUNNING:
            _progress(view)
        if state.active:
            _cancel(run_id, status)
        if state is RunState.DONE:
            _outcome(run, status)
        if state.final:
            kept_until(run, status)
    for warning in view.warnings:
        st.warning(inert.markdown(warning.message), icon=":material/warning:")
    for message in view.errors:
        st.error(inert.markdown(message), icon=":material/error:")
    if view.epochs:
        st.plotly_chart(
            _curves(view.epochs),
            width="stretch",
            key=f"train.curves_{len(view.epochs)}",
            config={"displayModeBar": False},
        )


def _outcome(run: Run, status: RunRow) -> None:
    """The finished run in a line: its final accuracy against the majority rate, and how long."""
    metrics = run.metrics() or {}
    took = duration((status.finished or 0) - status.started) if status.started else "-"
    if "best_val_accuracy" in metrics:
        judged = outcome.judge_metrics(metrics)
        columns = st.columns(3)
        columns[0].metric("Final accuracy", f"{judged.best_val_accuracy:.1%}")
        columns[1].metric("Always the commonest class", f"{judged.majority_rate:.1%}")
        columns[2].metric("Total time", took)
        if judged.worked:
            st.success("Training finished. See the confusion matrix and download the model on **Results**.")
        else:
            st.error(judged.advice, icon=":material/error:")
    else:
        st.success(f"Training finished in {took}.")
    links = st.columns(2)
    links[0].page_link(
        "pages/results.py", label="Open Results", icon=":material/insights:", query_params={"run": run.id}
    )
    links[1].page_link(
        "pages/predict.py",
        label="Try this model",
        icon=":material/image_search:",
        query_params={"run": run.id},
    )


def _cancel(run_id: str, status: RunRow) -> None:
    """A cancel button; past a minute of training it asks first, since the work would be lost."""
    trained_s = time.time() - status.started if status.started else 0.0
    asking = st.session_state.get("train.confirm_cancel") == run_id
    if not asking and st.button("Cancel", key="train.cancel", icon=":material/stop:"):
        if trained_s <= CONFIRM_CANCEL_AFTER_S:
            jobs.cancel(run_id, viewer())
            st.rerun()
        st.session_state["train.confirm_cancel"] = asking = run_id
    if asking:
        st.warning(f"Cancel this run? It has trained for {duration(trained_s)}, and that work will be lost.")
        yes, no = st.columns(2)
        if yes.button("Yes, cancel it", key="train.confirm_cancel_yes", type="primary"):
            st.session_state.pop("train.confirm_cancel", None)
            jobs.cancel(run_id, viewer())
            st.rerun()
        if no.button("Keep training", key="train.confirm_cancel_no"):
            st.session_state.pop("train.confirm_cancel", None)
            st.rerun()


def _estimated_wait(run_id: str) -> str:
    """How long until this queued run starts (``progress.queue_wait``), from the runs training
    now and the median length of the finished ones. Everyone's runs share the queue, so all of
    them count here; only a duration is shown of them."""
    rows = jobs.list_runs()
    line = jobs.waiting_runs()
    ahead = line.index(run_id) if run_id in line else len(line)
    lengths = sorted((r.finished or 0.0) - r.started for r in rows if r.state is RunState.DONE and r.started)
    now = time.time()
    running = [_time_left(row.run_id, now) for row in rows if row.state is RunState.RUNNING]
    wait = queue_wait(running, ahead, lengths[len(lengths) // 2] if lengths else None)
    return "wait not known yet" if wait is None else f"starts in about {duration(wait)}"


def _time_left(run_id: str, now: float) -> float | None:
    run = Run.open(run_id)  # maybe another owner's run: only its time left is used
    return RunProgress.of(read_events(run.directory), run.plan_fields().get("epochs")).eta_s(now)


def _progress(view: RunProgress) -> None:
    """The phase under way, as a bar with done / total, rate and time left."""
    eta = duration(view.eta_s(time.time()))
    if view.phase in PHASE_LABELS and view.current is not None:
        step = view.current
        st.progress(
            step.done / max(step.total, 1),
            text=f"{PHASE_LABELS[view.phase]}: {step.done:,} of {step.total:,} images "
            f"· {step.images_per_s:,.0f} images/s · {eta} left",
        )
        return
    if view.phase in PHASE_CAPTIONS:
        st.caption(PHASE_CAPTIONS[view.phase])
        return
    batch = view.batch
    if view.phase != "training":
        st.caption("Preparing: reading the data and building the network...")
        return
    if batch is not None:
        st.progress(view.epoch_fraction, text=f"Epoch {batch.epoch} · step {batch.step} of {batch.steps}")
    if view.total_epochs:
        done = len(view.epochs)
        st.progress(done / view.total_epochs, text=f"{done} of {view.total_epochs} epochs")
    if batch is not None:
        columns = st.columns(3)
        columns[0].metric("Images / s", f"{batch.images_per_s:.1f}")
        columns[1].metric("Loss", f"{batch.loss:.3f}")
        columns[2].metric("ETA", eta)


def _curves(epochs: list[EpochEnd]) -> go.Figure:
    x = [e.epoch for e in epochs]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[e.train_loss for e in epochs], name="train loss", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=x, y=[e.val_loss for e in epochs], name="val loss", mode="lines+markers"))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[e.train_accuracy for e in epochs],
            name="train accuracy",
            mode="lines+markers",
            yaxis="y2",
            line={"dash": "dot"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[e.val_accuracy for e in epochs],
            name="val accuracy",
            mode="lines+markers",
            yaxis="y2",
            line={"dash": "dot"},
        )
    )
    fig.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis=epoch_axis(max(x)),
        yaxis={"title": "loss", "rangemode": "tozero"},
        yaxis2=accuracy_axis() | {"overlaying": "y", "side": "right"},
        legend={"orientation": "h", "y": 1.15},
    )
    return fig


def _new_run_button() -> None:
    if st.button("New run", key="train.new_run", icon=":material/add:"):
        del st.query_params["run"]
        st.rerun()
