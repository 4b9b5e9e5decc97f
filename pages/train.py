"""Train: choose data, check the report, set the plan, start, and watch the run live."""

from __future__ import annotations

import json

import streamlit as st

from core import inert, jobs
from core.jobs.estimate import estimate_result, submit_estimate
from core.training.estimated import Estimate
from core.training.progress import duration
from pages import _live, _plan_form
from pages._access import limits, viewer
from pages._data import choose_dataset
from pages._jobs import progress_card
from pages._report import show_report

POLL_SECONDS = 1.0


def _estimate_text(guess: Estimate, case: int) -> str:
    """The estimate in one sentence: the total, then its parts."""
    prepared = "decode images, compute features, fit the new layer" if case <= 2 else "decode images"
    epochs = (
        "each epoch refines the new layer in " + duration(guess.epoch_s)
        if case <= 2
        else f"{duration(guess.epoch_s)} per epoch"
    )
    return (
        f"About {duration(guess.total_s)} in all on {guess.device} ({guess.precision}): "
        f"{duration(guess.prepare_s)} to prepare ({prepared}), {epochs}, "
        f"{duration(guess.export_s)} to export the model."
    )


def _show_estimate(job_id: str, case: int) -> None:
    """The estimate once its job has timed the plan, its progress until then, or why there is none."""
    try:
        result = estimate_result(job_id, viewer())
    except jobs.RunNotFound:  # swept with old jobs since: a new one is a click away
        return
    if result is None:
        _follow_estimate(job_id)
    elif isinstance(result, Estimate):
        st.info(_estimate_text(result, case), icon=":material/timer:")
    else:
        st.warning(f"Could not estimate: {inert.markdown(result)}")


@st.fragment(run_every=POLL_SECONDS)
def _follow_estimate(job_id: str) -> None:
    """The estimate job's progress, polled, with a Cancel button; the page reruns once it has ended."""
    if jobs.reconcile(job_id, viewer()).state.final:
        st.rerun()
    progress_card(job_id, key="train.estimate_progress", phases={}, waiting="Timing two batches")


st.title("Train")

run_id = st.query_params.get("run")
if run_id:
    _live.show_run(run_id)
    st.stop()

dataset = choose_dataset("train", _plan_form.validation_share())
if dataset is None:
    st.stop()
show_report(dataset)

plan = _plan_form.plan_form(dataset)
if plan is None:
    st.stop()
estimate_col, start_col = st.columns([3, 1])
# plan -> its estimate's job: the estimate stays on screen while the plan does
estimates: dict[str, str] = st.session_state.setdefault("train.estimates", {})
plan_key = json.dumps(plan.to_dict(), sort_keys=True)
if estimate_col.button(
    "Estimate time",
    key="train.estimate",
    icon=":material/timer:",
    help="Times two real batches of your data, in a job, where the run would train (here, or a Ray node).",
):
    try:
        estimates[plan_key] = submit_estimate(plan.to_dict(), owner=viewer().owner, limits=limits())
    except jobs.LimitExceeded as exc:
        estimate_col.warning(f"Could not estimate: {inert.markdown(str(exc))}.")
if (job_id := estimates.get(plan_key)) is not None:
    with estimate_col:
        _show_estimate(job_id, plan.case)
if start_col.button("Start training", type="primary", key="train.start", icon=":material/play_arrow:"):
    try:
        new_run = jobs.submit(
            plan.to_dict(),
            dataset_name=dataset.report.source.get("name"),
            owner=viewer().owner,
            limits=limits(),
        )
    except jobs.LimitExceeded as exc:
        st.error(f"Not started: {exc}.", icon=":material/block:")
    else:
        st.query_params["run"] = new_run
        st.rerun()
