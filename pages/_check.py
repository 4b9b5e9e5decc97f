"""Results' "check it on other labelled images": the zip is validated by one job and the model
scored on it by another, never by the web server; the page follows them and reads the scores."""

from __future__ import annotations

from typing import Any

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core import inert, jobs
from core.errors import TransferLabError
from core.jobs import uploads
from core.jobs.evaluation import SCORING, evaluation_result, submit_evaluation
from pages._access import limits, viewer
from pages._charts import confusion_heatmap
from pages._jobs import progress_card

UPLOADS = "results.check_uploads"  # the uploader's file id -> its sha256, once handed to a job
SCORINGS = "results.check_scorings"  # (run, sha256) -> the job scoring that run on that data
POLL_SECONDS = 1.0


def check_on_labelled_zip(run_id: str) -> None:
    """The uploader for a labelled zip, and where checking the model of ``run_id`` on it stands."""
    upload = st.file_uploader(
        "A zip with one folder per class, named as this model's classes (images it never saw)",
        type=["zip"],
        key="results.check_zip",
    )
    if upload is None:
        return
    try:
        job_id = _scoring_job(run_id, upload)
    except TransferLabError as exc:
        st.error(f"{inert.markdown(upload.name)}: {inert.markdown(exc)}", icon=":material/block:")
        return
    if job_id is None:
        return
    status = jobs.status(job_id, viewer())
    if status.state.active:
        _follow(job_id, "check_scoring", {SCORING: "Scoring images"}, "Loading the model")
        return
    scores = evaluation_result(job_id, viewer())
    if scores is None:
        message = status.message or f"the check {status.state}"
        st.error(f"{inert.markdown(upload.name)}: {inert.markdown(message)}", icon=":material/block:")
        return
    _show_scores(scores, upload.name)


def _scoring_job(run_id: str, upload: UploadedFile) -> str | None:
    """The job scoring ``run_id`` on the upload, started once its validation has passed;
    ``None`` while the validation job is still going (its progress shown) or once it refused."""
    digests = st.session_state.setdefault(UPLOADS, {})
    if upload.file_id not in digests:  # once per file: each call would start another validation
        digests[upload.file_id] = uploads.accept_upload(
            upload.getvalue(), upload.name, viewer().owner, limits()
        )
    digest = digests[upload.file_id]
    state = uploads.upload_state(digest, viewer())
    if state.refusal is not None:
        st.error(f"This data cannot be used: {inert.markdown(state.refusal)}", icon=":material/block:")
        return None
    if state.dataset is None:
        _follow(state.job_id, "check_validation", {"validating": "Checking images"}, "Reading the zip")
        return None
    scorings = st.session_state.setdefault(SCORINGS, {})
    if (run_id, digest) not in scorings:
        scorings[(run_id, digest)] = submit_evaluation(run_id, state.dataset, upload.name, viewer(), limits())
    return scorings[(run_id, digest)]


@st.fragment(run_every=POLL_SECONDS)
def _follow(job_id: str, key: str, phases: dict[str, str], waiting: str) -> None:
    """A job's progress, polled; the whole page reruns once it has ended."""
    if jobs.reconcile(job_id, viewer()).state.final:
        st.rerun()
    progress_card(job_id, key=key, phases=phases, waiting=waiting)


def _show_scores(scores: dict[str, Any], name: str) -> None:
    st.metric(
        f"Accuracy on {scores['images']:,} images of {inert.markdown(name)}",
        f"{scores['accuracy']:.1%}",
        help=f"Always answering the most common class would score {scores['majority_rate']:.1%}.",
    )
    st.plotly_chart(
        confusion_heatmap(scores["confusion_matrix"], scores["labels"]),
        width="stretch",
        key="results.check_confusion",
    )
