"""Predict's "many images at once": a zip of images classified by a job, never by the web server
(a 2 KB zip can hold ten 49-megapixel images); the page follows the job and reads its results."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import inert, jobs
from core.jobs import Run, predictions
from core.jobs.run import RunNotFound
from core.limits import LimitExceeded
from pages._access import limits, viewer
from pages._jobs import progress_card

BATCH_PARAM = "batch"  # the URL's name for a batch prediction job: a reload finds it again
SUBMITTED_BATCH = "predict.submitted_batch"  # (model, the uploader's file) last handed to a job
POLL_SECONDS = 1.0


@st.fragment(run_every=POLL_SECONDS)
def _follow_batch(job_id: str) -> None:
    """The batch job's progress, polled; the whole page reruns once it has ended."""
    if jobs.reconcile(job_id, viewer()).state.final:
        st.rerun()
    progress_card(
        job_id, key="predict.batch_progress", phases={"predicting": "Classifying images"},
        waiting="Checking the zip",
    )  # fmt: skip


def show_batch(job_id: str) -> None:
    """The batch job the URL names: its progress, its table and CSV, or why it failed. The
    images are read and classified by the job: this page only reads its results."""
    try:
        status = jobs.status(job_id, viewer())
    except RunNotFound:
        st.warning("No such batch of predictions: upload the zip again.", icon=":material/help:")
        return
    if status.state.active:
        _follow_batch(job_id)
        return
    result = predictions.batch_result(job_id, viewer())
    if result is None:
        message = status.message or f"the batch {status.state}"
        st.error(f"The images were not classified: {inert.markdown(message)}", icon=":material/block:")
        return
    _batch_table(result, Run.open(job_id, viewer()).record().dataset_name or "images.zip")


def _batch_table(result: predictions.BatchResult, name: str) -> None:
    st.dataframe(
        [
            {
                "file": inert.terminal(r.file),
                "predicted": inert.terminal(r.top[0][0]) if r.top else "",
                "confidence": r.top[0][1] if r.top else None,
                "error": r.error,
            }
            for r in result.rows
        ],
        hide_index=True,
        width="stretch",
        key="predict.batch_rows",
        column_config={"confidence": st.column_config.NumberColumn("confidence", format="percent")},
    )
    st.download_button(
        "Download the predictions (CSV)",
        data=result.csv,
        file_name=f"{Path(name).stem}-predictions.csv",
        mime="text/csv",
        key="predict.batch_csv",
        icon=":material/download:",
    )


def batch_predictions(run_id: str) -> None:
    """The zip uploader for the model of ``run_id``, and the batch job the URL names."""
    batch = st.file_uploader(
        "A zip of images (any folders inside; no labels needed)", type=["zip"], key="predict.batch_zip"
    )
    if batch is not None and st.session_state.get(SUBMITTED_BATCH) != (run_id, batch.file_id):
        st.session_state[SUBMITTED_BATCH] = (run_id, batch.file_id)
        try:
            st.query_params[BATCH_PARAM] = predictions.submit_predictions(
                run_id, batch.getvalue(), batch.name, viewer(), limits()
            )
        except LimitExceeded as exc:
            st.error(f"{inert.markdown(batch.name)} was not accepted: {exc}.", icon=":material/block:")
    job_id = st.query_params.get(BATCH_PARAM)
    if job_id:
        show_batch(job_id)
