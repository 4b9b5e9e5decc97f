"""The Train page's data step: pick a source, ingest it safely, show the report."""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from core.data import Dataset, IngestError, ingest
from core.samples import SAMPLES, sample_path

DATA_ROOT_ENV = "TRANSFER_LAB_DATA_ROOT"  # set it to let users train on folders under it
SOURCES = {"sample": "Sample data set", "upload": "Upload a zip", "folder": "Folder on the server"}
GRID_CLASSES, GRID_IMAGES = 8, 6


def choose_dataset() -> Dataset | None:
    """The data set the user picked, validated; ``None`` (with a message) until there is one."""
    sources = [key for key in SOURCES if key != "folder" or os.environ.get(DATA_ROOT_ENV)]
    source = st.segmented_control(
        "Data", sources, format_func=SOURCES.get, default="sample", required=True, key="source",
        help="A zip with one folder per class (optionally inside train/ and val/ folders). "
        "Uploads are held in the server's memory: use a server folder for very large data.",
    )
    if source == "upload":
        upload = st.file_uploader("Zip of images, one folder per class", type=["zip"], key="upload")
        if upload is None:
            st.info("Upload a zip, or pick a sample data set to try the app first.")
            return None
        return _ingest_once(("upload", upload.name, upload.size), lambda: upload.getvalue(), upload.name)
    if source == "folder":
        return _server_folder()
    name = st.selectbox(
        "Sample data set", list(SAMPLES), key="sample",
        format_func=lambda key: SAMPLES[key].title,
    )
    sample = SAMPLES[name]
    st.caption(f"{sample.description} Source: {sample.source} ({sample.licence}).")
    return _ingest_once(("sample", name), lambda: sample_path(name), sample.title)


def _server_folder() -> Dataset | None:
    root = Path(os.environ[DATA_ROOT_ENV]).resolve()
    relative = st.text_input(f"Folder under `{root}`", key="folder", placeholder="e.g. flowers/")
    if not relative:
        return None
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root):
        st.error(f"{relative!r} is outside {root}: choose a folder under it.")
        return None
    return _ingest_once(("folder", str(folder)), lambda: folder, str(folder))


def _ingest_once(identity: tuple, load, label: str) -> Dataset | None:  # noqa: ANN001 - a thunk
    """Ingest once per source per session; the data set itself is cached on disk by content."""
    cache = st.session_state.setdefault("datasets", {})
    if identity not in cache:
        progress = st.progress(0.0, text=f"Checking {label}...")
        try:
            cache[identity] = ingest(
                load(), name=label,
                progress=lambda done, total: progress.progress(done / max(total, 1), text=f"Checked {done:,} of {total:,} images"),
            )
        except IngestError as exc:
            cache[identity] = exc
        progress.empty()
    result = cache[identity]
    if isinstance(result, IngestError):
        st.error(f"This data cannot be used: {result}", icon=":material/block:")
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
            st.warning(warning, icon=":material/warning:")
        st.plotly_chart(_counts_chart(report.counts), width="stretch", key="counts",
                        config={"displayModeBar": False})
        _image_grid(dataset)
        if report.skipped:
            with st.expander(f"{len(report.skipped)} skipped files"):
                st.dataframe(report.skipped, hide_index=True, width="stretch", key="skipped")


def _counts_chart(counts: dict[str, dict[str, int]]) -> go.Figure:
    fig = go.Figure()
    for split, per_class in counts.items():
        if any(per_class.values()):
            fig.add_trace(go.Bar(x=list(per_class), y=list(per_class.values()), name=split))
    fig.update_layout(barmode="stack", height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      yaxis_title="images", legend={"orientation": "h", "y": 1.15})
    return fig


def _image_grid(dataset: Dataset) -> None:
    classes = dataset.classes
    shown = classes if len(classes) <= GRID_CLASSES else st.multiselect(
        "Show images of", classes, default=classes[:GRID_CLASSES], key="grid_classes")
    for label in shown:
        index = classes.index(label)
        files = [s.path for s in dataset.train if s.label == index][:GRID_IMAGES]
        st.markdown(f"**{label}**")
        st.image([str(f) for f in files], width=96)
