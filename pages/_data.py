"""The Train page's data step: pick a source, ingest it safely, show the report."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from core import jobs
from core.data import Dataset, IngestError, ingest
from core.data.samples import SAMPLES, sample_path
from core.jobs import targets
from core.jobs.run import Run, RunState
from core.training.events import read_events
from core.training.progress import RunProgress, duration
from pages._access import viewer
from pages._common import escape
from pages._plan_form import DEFAULT_VAL, VAL_KEY

DATA_ROOT_ENV = "TRANSFER_LAB_DATA_ROOT"  # set it to let users train on folders under it
UPLOAD_PARAM = "upload"  # the URL's name for an upload: its sha256
SUBMITTED = "submitted_upload"  # the uploader's file last handed to a validation job
POLL_SECONDS = 1.0
SOURCES = {"sample": "Sample data set", "upload": "Upload a zip", "folder": "Folder on the server"}
GRID_CLASSES, GRID_IMAGES = 8, 6
LAST_UPLOAD = "last_upload"


def choose_dataset() -> Dataset | None:
    """The data set the user picked, validated; ``None`` (with a message) until there is one."""
    sources = [key for key in SOURCES if key != "folder" or os.environ.get(DATA_ROOT_ENV)]
    source = st.segmented_control(
        "Data",
        sources,
        format_func=SOURCES.get,
        default="upload" if UPLOAD_PARAM in st.query_params else "sample",
        required=True,
        key="source",
        persist_state="session",
        help="A zip with one folder per class (optionally inside train/ and val/ folders). "
        "Uploads are held in the server's memory: use a server folder for very large data.",
    )
    if source == "upload":
        return _uploaded()
    if source == "folder":
        return _server_folder()
    name = st.selectbox(
        "Sample data set",
        list(SAMPLES),
        key="sample",
        persist_state="session",
        format_func=lambda key: SAMPLES[key].title,
    )
    sample = SAMPLES[name]
    st.caption(f"{sample.description} Source: {sample.source} ({sample.licence}).")
    return _ingest(("sample", name), lambda: sample_path(name), sample.title)


def _uploaded() -> Dataset | None:
    """The zip in the uploader, validated by a job of its own (never in the web server).

    The URL names the upload by its content hash, so a reload (or a visit to another page, which
    empties the uploader) finds the validation, or the validated data set, again.
    """
    upload = st.file_uploader("Zip of images, one folder per class", type=["zip"], key="upload")
    if upload is not None and st.session_state.get(SUBMITTED) != upload.file_id:
        st.session_state[SUBMITTED] = upload.file_id
        st.session_state[LAST_UPLOAD] = targets.accept_upload(upload.getvalue(), upload.name, viewer().owner)
        st.query_params[UPLOAD_PARAM] = st.session_state[LAST_UPLOAD]
    digest = st.query_params.get(UPLOAD_PARAM) or st.session_state.get(LAST_UPLOAD)
    if not digest:
        st.info("Upload a zip, or pick a sample data set to try the app first.")
        return None
    state = targets.upload_state(digest, viewer())
    if state.dataset is not None:
        if upload is None:
            st.caption("Using your earlier upload. Upload another zip to replace it.")
        return _ingest(("upload", digest), lambda: state.dataset, "your upload")
    if state.refusal is not None:
        st.error(f"This data cannot be used: {escape(state.refusal)}", icon=":material/block:")
        return None
    _follow_validation(digest)
    return None


@st.fragment(run_every=POLL_SECONDS)
def _follow_validation(digest: str) -> None:
    """The validation job's progress, polled; the whole page reruns once it has ended."""
    state = targets.upload_state(digest, viewer())
    if state.job_id is None or RunState(jobs.reconcile(state.job_id, viewer())["state"]).final:
        st.rerun()
    progress = RunProgress.of(read_events(Run.open(state.job_id, viewer()).directory))
    step = progress.current
    with st.container(border=True, key="validation"):
        if step is None:
            st.caption("Checking the upload: reading the zip...")
        else:
            left = duration(progress.eta_s(time.time()))
            st.progress(
                step.done / max(step.total, 1),
                text=f"Checking images: {step.done:,} of {step.total:,} · {step.images_per_s:,.0f} images/s · {left} left",
            )
        if st.button("Cancel", key="cancel_validation", icon=":material/stop:"):
            jobs.cancel(state.job_id, viewer())
            st.rerun()


def _server_folder() -> Dataset | None:
    root = Path(os.environ[DATA_ROOT_ENV]).resolve()
    relative = st.text_input(
        f"Folder under `{root}`", key="folder", persist_state="session", placeholder="e.g. flowers/"
    )
    if not relative:
        return None
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root):
        st.error(f"{escape(relative)} is outside {escape(root)}: choose a folder under it.")
        return None
    # A refusal is not remembered: the folder may be fixed by the time the user looks again.
    return _ingest(("folder", str(folder)), lambda: folder, str(folder), cache_errors=False)


def _ingest(
    identity: tuple, load: Callable[[], object], label: str, *, cache_errors: bool = True
) -> Dataset | None:
    """Ingest once per source and validation share in this session, with a progress bar.

    The data set itself is cached on disk by content; the session keeps the result so that a
    rerun costs nothing, and re-splits (cheaply) when the user moves the validation share.
    """
    val_fraction = st.session_state.get(VAL_KEY, DEFAULT_VAL)
    cache = st.session_state.setdefault("datasets", {})
    key = (identity, val_fraction)
    if key not in cache:
        source = load()
        progress = st.progress(0.0, text=f"Checking {escape(label)}...")
        try:
            cache[key] = ingest(
                source,
                name=label,
                val_fraction=val_fraction,
                progress=lambda done, total: progress.progress(
                    done / max(total, 1), text=f"Checked {done:,} of {total:,} images"
                ),
            )
        except IngestError as exc:
            cache[key] = exc
        progress.empty()
    result = cache[key]
    if isinstance(result, IngestError):
        if not cache_errors:
            del cache[key]
        st.error(f"This data cannot be used: {escape(result)}", icon=":material/block:")
        return None
    return result


def show_report(dataset: Dataset) -> None:
    """Counts per class, a few images of each, what was skipped, and what to watch out for."""
    report = dataset.report
    with st.container(border=True, key="report"):
        columns = st.columns(4)
        columns[0].metric("Classes", len(dataset.classes))
        columns[1].metric("Training images", len(dataset.train))
        columns[2].metric("Validation images", len(dataset.val))
        columns[3].metric("Skipped files", len(report.skipped))
        st.caption(f"Layout: {report.layout}. Validation split: {report.split}.")
        for warning in report.warnings:
            st.warning(escape(warning), icon=":material/warning:")
        st.plotly_chart(
            _counts_chart(report.counts), width="stretch", key="counts", config={"displayModeBar": False}
        )
        _image_grid(dataset)
        if report.skipped:
            with st.expander(f"{len(report.skipped)} skipped files"):
                st.dataframe(report.skipped, hide_index=True, width="stretch", key="skipped")


def _counts_chart(counts: dict[str, dict[str, int]]) -> go.Figure:
    fig = go.Figure()
    for split, per_class in counts.items():
        if any(per_class.values()):
            names = [html.escape(label) for label in per_class]  # plotly renders tags in labels
            fig.add_trace(go.Bar(x=names, y=list(per_class.values()), name=split))
    fig.update_layout(
        barmode="stack",
        height=260,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis_title="images",
        legend={"orientation": "h", "y": 1.15},
    )
    return fig


def _image_grid(dataset: Dataset) -> None:
    classes = dataset.classes
    shown = (
        classes
        if len(classes) <= GRID_CLASSES
        else st.multiselect("Show images of", classes, default=classes[:GRID_CLASSES], key="grid_classes")
    )
    for label in shown:
        index = classes.index(label)
        files = [s.path for s in dataset.train if s.label == index][:GRID_IMAGES]
        st.markdown(f"**{escape(label)}**")
        st.image([str(f) for f in files], width=96)
