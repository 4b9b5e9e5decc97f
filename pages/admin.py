"""Admin: the disk each owner takes, the queue and its workers, the finished runs and when they go;
pin, delete and cancel. The shell lists this page for admins only: for anyone else it does not exist."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import inert, jobs
from core.housekeeping import retention
from core.jobs import Run, RunRow, RunState, backend, usage
from core.jobs.kinds import KINDS, TRAIN
from core.limits import SIZE_UNITS, human_bytes, size_unit
from pages._access import limits, viewer
from pages._common import data_name, run_label
from pages._retention import kept_when

CONFIRM_DELETE = "admin.confirm_delete"
DONE_MESSAGE = "admin.done"


@dataclass(frozen=True)
class Listed:
    """A job as this page lists it: its row and its run handle, opened once here for every
    section of the page."""

    row: RunRow
    run: Run


def all_rows() -> list[Listed]:
    """Every job of every kind and owner, newest first."""
    listed = [
        Listed(row, Run.open(row.run_id, viewer()))
        for kind in KINDS
        for row in jobs.list_runs(kind, viewer())
    ]
    return sorted(listed, key=lambda job: job.row.submitted or 0.0, reverse=True)


def disk() -> None:
    """Per owner: runs and data sets, in a table and a bar; and the home's file system."""
    st.subheader("Disk")
    owners = sorted(usage.disk_by_owner().values(), key=lambda entry: entry.total_bytes, reverse=True)
    total, free = usage.home_disk()
    columns = st.columns(3)
    columns[0].metric(
        "Transfer Lab's data", human_bytes(usage.stored_bytes()), help="Each shared data set counted once."
    )
    columns[1].metric("Free on its disk", human_bytes(free))
    columns[2].metric("Disk size", human_bytes(total))
    if not owners:
        st.caption("Nothing stored yet.")
        return
    table = pd.DataFrame(
        {
            "Owner": [entry.owner for entry in owners],
            "Runs": [entry.runs for entry in owners],
            "In runs": [human_bytes(entry.run_bytes) for entry in owners],
            "Data sets": [len(entry.datasets) for entry in owners],
            "In data sets": [human_bytes(entry.dataset_bytes) for entry in owners],
            "Total": [human_bytes(entry.total_bytes) for entry in owners],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
    st.plotly_chart(
        disk_chart(owners), width="stretch", key="admin.disk_chart", config={"displayModeBar": False}
    )


def disk_chart(owners: list[usage.OwnerUsage]) -> go.Figure:
    """Runs and data sets per owner, stacked, in the unit of the largest total,
    with human sizes on hover."""
    names = [entry.owner for entry in owners]
    unit = size_unit(max(entry.total_bytes for entry in owners))
    scale = 1024 ** SIZE_UNITS.index(unit)
    fig = go.Figure()
    for label, sizes in (
        ("runs", [entry.run_bytes for entry in owners]),
        ("data sets", [entry.dataset_bytes for entry in owners]),
    ):
        fig.add_trace(
            go.Bar(
                x=names,
                y=[size / scale for size in sizes],
                name=label,
                customdata=[human_bytes(size) for size in sizes],
                hovertemplate="%{x}: %{customdata} in " + label + "<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        height=280,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={"title": unit},
        legend={"orientation": "h", "y": 1.15},
    )
    return fig


def queue(rows: list[Listed]) -> None:
    """The queued and running jobs, with their place in line and their workers."""
    now = time.time()
    _jobs_table(
        "Queue and workers",
        [job for job in rows if job.row.state.active],
        "No job is queued or running.",
        {
            "Place in queue": lambda job: job.row.queue_position,
            "Submitted": lambda job: _when(job.row.submitted),
            "Worker": lambda job: _worker(job.row),
            "Heartbeat": lambda job: f"{now - job.row.heartbeat:.0f} s ago" if job.row.heartbeat else "-",
            "Slot / GPU": lambda job: _slot(job.row),
            "Backend": lambda job: backend.of_run(job.row).name,
        },
    )


def finished(rows: list[Listed]) -> None:
    """The finished jobs, and until when retention keeps each."""
    rule = limits()
    _jobs_table(
        "Finished runs",
        [job for job in rows if job.row.state.final],
        "No finished run.",
        {
            "Finished": lambda job: _when(job.row.finished),
            "Size": lambda job: human_bytes(usage.run_bytes(job.run)),
            "Kept": lambda job: kept_when(job.run, rule, job.row) or "forever",
            "Damage": lambda job: job.row.message if job.row.state is RunState.DAMAGED else "",
        },
    )


def _jobs_table(
    title: str, rows: list[Listed], empty: str, columns: dict[str, Callable[[Listed], object]]
) -> None:
    """A section listing jobs: who, what and in which state, then ``columns``, each computed
    from a row; ``empty`` when there are none."""
    st.subheader(title)
    if not rows:
        st.caption(empty)
        return
    every = {
        "Run": lambda job: job.row.run_id,
        "Owner": lambda job: job.row.owner or "local",
        "Kind": lambda job: job.row.kind.label,
        "State": lambda job: str(job.row.state),
        **columns,
    }
    frame = pd.DataFrame({name: [value(row) for row in rows] for name, value in every.items()})
    st.dataframe(frame, hide_index=True, width="stretch")


def actions(rows: list[Listed]) -> None:
    """Pin or unpin, delete (asking first) a finished run; cancel an active one."""
    st.subheader("Act on a run")
    if not rows:
        st.caption("No runs.")
        return
    by_id = {job.row.run_id: job for job in rows}
    chosen = st.selectbox(
        "Run",
        list(by_id),
        format_func=lambda run_id: _choice(by_id[run_id]),
        key="admin.run",
    )
    run = by_id[chosen].run
    if by_id[chosen].row.state.active:
        if st.button("Cancel", key="admin.cancel", icon=":material/stop:"):
            jobs.cancel(chosen, viewer())
            _done(f"Cancelled {chosen}.")
        return
    buttons = st.columns(2)
    if retention.is_pinned(run):
        if buttons[0].button("Unpin", key="admin.unpin", icon=":material/keep_off:"):
            retention.unpin(run)
            _done(f"Unpinned {chosen}: retention applies to it again.")
    elif buttons[0].button("Pin", key="admin.pin", icon=":material/keep:"):
        retention.pin(run)
        _done(f"Pinned {chosen}: kept until unpinned.")
    if buttons[1].button("Delete", key="admin.delete", icon=":material/delete:"):
        st.session_state[CONFIRM_DELETE] = chosen
    if st.session_state.get(CONFIRM_DELETE) == chosen:
        _confirm_delete(run)


def _choice(job: Listed) -> str:
    """A run in the chooser: its id, kind, state and owner, then what it ran on."""
    row = job.row
    what = run_label(row) if row.kind is TRAIN else data_name(row)
    return f"{row.run_id} · {row.kind.label} · {row.state} · {row.owner or 'local'} · {what}"


def _confirm_delete(run: Run) -> None:
    st.warning(f"Delete run {inert.markdown(run.id)} and its model for good? This cannot be undone.")
    yes, no = st.columns(2)
    if yes.button("Yes, delete it", key="admin.delete_yes", type="primary"):
        st.session_state.pop(CONFIRM_DELETE, None)
        try:
            freed = retention.delete(run)
        except retention.CannotDelete as exc:
            st.error(str(exc))
            return
        _done(f"Deleted {run.id}: {human_bytes(freed)} freed.")
    if no.button("Keep it", key="admin.delete_no"):
        st.session_state.pop(CONFIRM_DELETE, None)
        st.rerun()


def _done(message: str) -> None:
    st.session_state[DONE_MESSAGE] = message
    st.rerun()


def _when(stamp: float | None) -> str:
    return time.strftime("%d %b %Y %H:%M", time.localtime(stamp)) if stamp else "-"


def _worker(row: RunRow) -> str:
    return f"pid {row.pid} on {row.host or '?'}" if row.pid else "-"


def _slot(row: RunRow) -> str:
    if row.slot is None:
        return "-"
    return f"slot {row.slot}" + (f" · GPU {row.gpu}" if row.gpu is not None else " · CPU")


st.title("Admin")
if not viewer().admin:  # the shell does not list this page for others; this is a second lock
    st.error("This page is for admins.")
    st.stop()
if message := st.session_state.pop(DONE_MESSAGE, None):
    st.success(message)
everything = all_rows()
disk()
queue(everything)
finished(everything)
actions(everything)
