"""The Train page's data step: pick a source, ingest it safely, show the report."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core import inert, jobs, storage
from core.data import Dataset, IngestError, ingest
from core.data.preview import GRID_CLASSES, SIZE, stored_previews
from core.data.samples import SAMPLES, sample_path
from core.errors import one_line
from core.jobs import targets
from core.jobs.run import RunState
from core.limits import LimitExceeded
from pages._access import limits, viewer
from pages._charts import counts_chart
from pages._jobs import progress_card
from pages._plan_form import DEFAULT_VAL, VAL_KEY

UPLOAD_PARAM = "upload"  # the URL's name for an upload: its sha256
SUBMITTED = "submitted_upload"  # the uploader's file last handed to a validation job
REFUSED = "refused_upload"  # (the uploader's file, why it was refused) while it stays there
POLL_SECONDS = 1.0
SOURCES = {"sample": "Sample data set", "upload": "Upload a zip", "folder": "Folder on the server"}
LAST_UPLOAD = "last_upload"


def choose_dataset() -> Dataset | None:
    """The data set the user picked, validated; ``None`` (with a message) until there is one."""
    sources = [key for key in SOURCES if key != "folder" or storage.data_root()]
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
        try:
            digest = targets.accept_upload(upload.getvalue(), upload.name, viewer().owner, limits())
        except LimitExceeded as exc:
            st.session_state[SUBMITTED] = upload.file_id
            st.session_state[REFUSED] = (
                upload.file_id,
                f"{inert.markdown(upload.name)} was not accepted: {exc}.",
            )
        except OSError as exc:  # a full disk: nothing was kept, and uploading again may work later
            st.error(
                f"This upload could not be kept: {inert.markdown(one_line(exc))}", icon=":material/error:"
            )
            return None
        else:
            st.session_state[SUBMITTED] = upload.file_id
            st.session_state[LAST_UPLOAD] = digest
            st.query_params[UPLOAD_PARAM] = digest
    refused = st.session_state.get(REFUSED)
    if upload is not None and refused and refused[0] == upload.file_id:
        st.error(refused[1], icon=":material/block:")  # until another zip replaces this one
        return None
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
        st.error(f"This data cannot be used: {inert.markdown(state.refusal)}", icon=":material/block:")
        return None
    _follow_validation(digest)
    return None


@st.fragment(run_every=POLL_SECONDS)
def _follow_validation(digest: str) -> None:
    """The validation job's progress, polled; the whole page reruns once it has ended."""
    state = targets.upload_state(digest, viewer())
    if state.job_id is None or RunState(jobs.reconcile(state.job_id, viewer())["state"]).final:
        st.rerun()
    progress_card(
        state.job_id, key="validation", phases={"validating": "Checking images"},
        waiting="Checking the upload: reading the zip",
    )  # fmt: skip


def _server_folder() -> Dataset | None:
    root = storage.data_root()
    relative = st.text_input(
        f"Folder under `{root}`", key="folder", persist_state="session", placeholder="e.g. flowers/"
    )
    if not relative:
        return None
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root):
        st.error(f"{inert.markdown(relative)} is outside {inert.markdown(root)}: choose a folder under it.")
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
        progress = st.progress(0.0, text=f"Checking {inert.markdown(label)}...")
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
        st.error(f"This data cannot be used: {inert.markdown(result)}", icon=":material/block:")
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
            st.warning(inert.markdown(warning), icon=":material/warning:")
        with st.expander("Images per class, and a few of each", expanded=False):
            st.plotly_chart(
                counts_chart(report.counts), width="stretch", key="counts", config={"displayModeBar": False}
            )
            _image_grid(dataset)
        if report.skipped:
            with st.expander(f"{len(report.skipped)} skipped files"):
                st.dataframe(report.skipped, hide_index=True, width="stretch", key="skipped")


def _image_grid(dataset: Dataset) -> None:
    """Every class: a row of examples each while there are few classes, one example each beyond.
    The pictures are the small previews made when the data was validated: the page decodes none."""
    shown = stored_previews(dataset.work) if dataset.work else None
    if shown is None:
        st.caption(
            "No pictures: this data set was checked before previews were kept. Upload it again to see some."
        )
        return
    if len(shown) > GRID_CLASSES:
        kept = [entry for entry in shown if entry.files]
        st.image(
            [str(entry.files[0]) for entry in kept],
            width=SIZE,
            caption=[inert.markdown(e.label) for e in kept],
        )
        return
    for entry in shown:
        st.markdown(f"**{inert.markdown(entry.label)}**")
        st.image([str(file) for file in entry.files], width=SIZE)
