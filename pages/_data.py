"""The data step of the pages that pick data (Train, and the Advisor's measurement): pick a
source, have it validated by a job, show the report.

An upload is validated by its job (``core.jobs.uploads``) and a server folder, the first time it
is picked, by a job of the same shape (``core.jobs.sources``); after that the page reads the
validated data set's stored manifest (``core.data.stored_dataset``), which decodes nothing. The
shipped samples are the exception: under a megabyte and a few hundred small images each, they
are checked here, once per server, then read from their manifest too. Each page has its own
picker (``train.data_source``, ``advisor.data_source``), which opens on the data last picked on
either (``handoff.data``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import streamlit as st

from core import inert, jobs, storage
from core.data import Dataset, IngestError, ingest, stored_dataset
from core.data.samples import SAMPLES, sample_path
from core.errors import one_line
from core.jobs import sources, uploads
from core.jobs.run import RunNotFound, RunState
from core.limits import LimitExceeded
from pages._access import limits, viewer
from pages._jobs import progress_card

UPLOAD_PARAM = "upload"  # the URL's name for an upload: its sha256
PICKED = "handoff.data"  # the data last picked on a page that picks data: source, sample, folder, upload
VALIDATIONS = "handoff.validations"  # a server folder -> the job validating it
POLL_SECONDS = 1.0
SOURCES = {"sample": "Sample data set", "upload": "Upload a zip", "folder": "Folder on the server"}
PHASES = {sources.VALIDATING: "Checking images"}


def choose_dataset(page: str, val_fraction: float = 0.2) -> Dataset | None:
    """The data set the user picked on ``page`` (which names its widgets), validated and split
    with ``val_fraction`` held out; ``None`` (with a message, or the validation's progress)
    until there is one."""
    sources_here = [key for key in SOURCES if key != "folder" or storage.data_root()]
    source = st.segmented_control(
        "Data",
        sources_here,
        format_func=SOURCES.get,
        required=True,
        help="A zip with one folder per class (optionally inside train/ and val/ folders). "
        "Uploads are held in the server's memory: use a server folder for very large data.",
        **_picker(page, "source", "upload" if UPLOAD_PARAM in st.query_params else "sample"),
    )
    if source == "upload":
        return _uploaded(page, val_fraction)
    if source == "folder":
        return _server_folder(page, val_fraction)
    name = st.selectbox(
        "Sample data set",
        list(SAMPLES),
        format_func=lambda key: SAMPLES[key].title,
        **_picker(page, "sample", next(iter(SAMPLES))),
    )
    sample = SAMPLES[name]
    st.caption(f"{sample.description} Source: {sample.source} ({sample.licence}).")
    return _shipped(page, name, val_fraction)


def _shipped(page: str, name: str, val_fraction: float) -> Dataset | None:
    """A shipped sample as a data set, checked here the first time (it is small and known: see
    the module's docstring), then read from its manifest; kept for the session."""
    kept = st.session_state.setdefault(f"{page}.samples", {})  # (sample, share held out) -> data set
    if (name, val_fraction) not in kept:
        try:
            with st.spinner(f"Checking {SAMPLES[name].title}..."):
                kept[name, val_fraction] = ingest(
                    sample_path(name), name=SAMPLES[name].title, val_fraction=val_fraction
                )
        except IngestError as exc:  # a full disk, say: not remembered, the next look may work
            st.error(f"This data cannot be used: {inert.markdown(exc)}", icon=":material/block:")
            return None
    return kept[name, val_fraction]


def _picker(page: str, field: str, first: object) -> dict[str, Any]:
    """Widget arguments for the picker's ``field`` on ``page``: it shows the data last picked on
    either page that picks data, and hands on what the user picks here."""
    key = f"{page}.data_{field}"
    st.session_state[key] = st.session_state.setdefault(PICKED, {}).get(field, first)
    return {"key": key, "on_change": _hand_on, "args": (key, field)}


def _hand_on(key: str, field: str) -> None:
    st.session_state.setdefault(PICKED, {})[field] = st.session_state[key]


def _uploaded(page: str, val_fraction: float) -> Dataset | None:
    """The zip in the uploader, validated by a job of its own (never in the web server).

    The URL names the upload by its content hash, so a reload (or a visit to another page, which
    empties the uploader) finds the validation, or the validated data set, again.
    """
    submitted, refused_key = f"{page}.submitted_upload", f"{page}.refused_upload"
    upload = st.file_uploader("Zip of images, one folder per class", type=["zip"], key=f"{page}.upload")
    if upload is not None and st.session_state.get(submitted) != upload.file_id:
        try:
            digest = uploads.accept_upload(upload.getvalue(), upload.name, viewer().owner, limits())
        except LimitExceeded as exc:
            st.session_state[submitted] = upload.file_id
            st.session_state[refused_key] = (
                upload.file_id,
                f"{inert.markdown(upload.name)} was not accepted: {exc}.",
            )
        except OSError as exc:  # a full disk: nothing was kept, and uploading again may work later
            st.error(
                f"This upload could not be kept: {inert.markdown(one_line(exc))}", icon=":material/error:"
            )
            return None
        else:
            st.session_state[submitted] = upload.file_id
            st.session_state.setdefault(PICKED, {})["upload"] = digest
            st.query_params[UPLOAD_PARAM] = digest
    refused = st.session_state.get(refused_key)
    if upload is not None and refused and refused[0] == upload.file_id:
        st.error(refused[1], icon=":material/block:")  # until another zip replaces this one
        return None
    digest = st.query_params.get(UPLOAD_PARAM) or st.session_state.get(PICKED, {}).get("upload")
    if not digest:
        st.info("Upload a zip, or pick a sample data set to try the app first.")
        return None
    state = uploads.upload_state(digest, viewer())
    if state.dataset is not None:
        if upload is None:
            st.caption("Using your earlier upload. Upload another zip to replace it.")
        return stored_dataset(state.dataset, val_fraction=val_fraction)
    if state.refusal is not None:
        st.error(f"This data cannot be used: {inert.markdown(state.refusal)}", icon=":material/block:")
        return None
    _follow(page, state.job_id, "Checking the upload: reading the zip")
    return None


def _server_folder(page: str, val_fraction: float) -> Dataset | None:
    root = storage.data_root()
    relative = st.text_input(
        f"Folder under `{root}`", placeholder="e.g. flowers/", **_picker(page, "folder", "")
    )
    if not relative:
        return None
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root):
        st.error(f"{inert.markdown(relative)} is outside {inert.markdown(root)}: choose a folder under it.")
        return None
    return _validated(page, folder, str(folder), val_fraction)


def _validated(page: str, source: Path, label: str, val_fraction: float) -> Dataset | None:
    """A server folder as a data set, once a job has validated it; until then the job's
    progress, or why it refused the data."""
    dataset = stored_dataset(source, val_fraction=val_fraction)
    if dataset is not None:
        return dataset
    try:
        job_id = _validation_job(source, label)
    except LimitExceeded as exc:
        st.error(f"{inert.markdown(label)} cannot be checked now: {exc}.", icon=":material/block:")
        return None
    refusal = sources.refusal(job_id, viewer())
    if refusal is None:
        _follow(page, job_id, f"Checking {inert.markdown(label)}")
        return None
    st.error(f"This data cannot be used: {inert.markdown(refusal)}", icon=":material/block:")
    # A refusal is not final: the folder may be fixed by the time the user looks again.
    if st.button("Check again", key=f"{page}.check_again", icon=":material/refresh:"):
        del st.session_state[VALIDATIONS][str(source)]
        st.rerun()
    return None


def _validation_job(source: Path, label: str) -> str:
    """The job checking ``source``: the one started in this session while it runs or once it
    refused, else a new one (never checked, changed since it passed, or its job deleted)."""
    started = st.session_state.setdefault(VALIDATIONS, {})
    with contextlib.suppress(RunNotFound):
        if str(source) in started and jobs.status(started[str(source)], viewer()).state is not RunState.DONE:
            return started[str(source)]
    started[str(source)] = sources.submit_validation(source, label, viewer().owner, limits())
    return started[str(source)]


@st.fragment(run_every=POLL_SECONDS)
def _follow(page: str, job_id: str, waiting: str) -> None:
    """A validation job's progress, polled; the whole page reruns once it has ended."""
    if job_id is None or jobs.reconcile(job_id, viewer()).state.final:
        st.rerun()
    progress_card(job_id, key=f"{page}.validation", phases=PHASES, waiting=waiting)
