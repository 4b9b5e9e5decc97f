"""Heatmaps on Results and Predict: Grad-CAM overlays drawn by a job (``core.jobs.explanations``),
never by the web server; the pages ask for them, follow the job and show its PNGs. Each page
passes the key its widgets here are named after, so that no two pages share one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core import inert, jobs
from core.errors import TransferLabError
from core.jobs.explanations import EXPLAINING, explanations, submit_explanations
from core.jobs.run import RunNotFound
from pages._access import limits, viewer
from pages._jobs import progress_card

PREDICTED = "the predicted class"
PER_CLASS = 2  # validation images of each class that Results explains beside its mistakes
COLUMNS = 4
POLL_SECONDS = 1.0
RESULTS_JOBS = "results.heatmap_jobs"  # run -> the job drawing its gallery's heatmaps
PREDICT_REQUEST = "predict.heatmap_request"  # (run, uploads, class) last handed to a job
PREDICT_JOB = "predict.heatmap_job"


def results_heatmaps(run_id: str, mistakes: Sequence[str], key: str) -> None:
    """Heatmaps of the run's confident mistakes and of a few validation images of each class,
    drawn when asked (a job of seconds per image); ``key`` names the button."""
    asked = st.session_state.setdefault(RESULTS_JOBS, {})
    if st.button("Show where the model looked", key=key, icon=":material/local_fire_department:"):
        asked[run_id] = _submitted(
            lambda: submit_explanations(
                run_id, mistakes=mistakes, per_class=PER_CLASS, viewer=viewer(), limits=limits()
            )
        )
    if asked.get(run_id):
        _show(asked[run_id], key=key)


def predict_heatmaps(run_id: str, uploads: Sequence[UploadedFile], labels: Sequence[str], key: str) -> None:
    """Heatmaps of every upload, for the predicted class or the class chosen, redrawn when the
    uploads or the class change; ``key`` names the class's selectbox."""
    if not uploads:
        return
    label = st.selectbox("Class to explain", [PREDICTED, *labels], key=key)
    chosen = None if label == PREDICTED else label
    request = (run_id, tuple(u.file_id for u in uploads), chosen)
    if st.session_state.get(PREDICT_REQUEST) != request:
        st.session_state[PREDICT_REQUEST] = request
        st.session_state[PREDICT_JOB] = _submitted(
            lambda: submit_explanations(
                run_id,
                uploads=[(u.name, u.getvalue()) for u in uploads],
                label=chosen,
                viewer=viewer(),
                limits=limits(),
            )
        )
    if st.session_state.get(PREDICT_JOB):
        _show(st.session_state[PREDICT_JOB], key=key)


def _submitted(submit: Callable[[], str]) -> str | None:
    """The job ``submit`` started, or None with the refusal shown (a quota, a limit)."""
    try:
        return submit()
    except TransferLabError as exc:
        st.error(f"No heatmaps: {inert.markdown(exc)}.", icon=":material/block:")
        return None


@st.fragment(run_every=POLL_SECONDS)
def _follow(job_id: str, key: str) -> None:
    """The job's progress, polled; the whole page reruns once it has ended."""
    if jobs.reconcile(job_id, viewer()).state.final:
        st.rerun()
    progress_card(
        job_id, key=f"{key}_progress", phases={EXPLAINING: "Drawing heatmaps"}, waiting="Loading the model"
    )


def _show(job_id: str, key: str) -> None:
    """The job's progress while it runs, then its overlays in a grid, or why there are none."""
    try:
        status = jobs.status(job_id, viewer())
    except RunNotFound:
        return
    if status.state.active:
        _follow(job_id, key)
        return
    drawn = explanations(job_id, viewer())
    if drawn is None:
        message = status.message or f"the job {status.state}"
        st.error(f"No heatmaps: {inert.markdown(message)}", icon=":material/block:")
        return
    if not drawn:
        st.caption("No images to explain: the run's data set is no longer stored here.")
        return
    columns = st.columns(COLUMNS)
    for i, (row, overlay) in enumerate(drawn):
        with columns[i % COLUMNS]:
            if overlay is None:
                st.caption(f"{inert.markdown(row.file)}: {inert.markdown(row.error)}")
                continue
            st.image(str(overlay), width="stretch")
            answer = f", answers {inert.markdown(row.predicted)}" if row.predicted != row.label else ""
            truth = f", truly {inert.markdown(row.truth)}" if row.truth else ""
            st.caption(
                f"**{inert.markdown(row.label)}** ({row.probability:.0%}){answer}{truth} · "
                f"{row.source} · {inert.markdown(row.file)}"
            )
