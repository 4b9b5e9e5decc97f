"""Train: choose data, check the report, set the plan, start, and watch the run live."""

from __future__ import annotations

import json

import streamlit as st

from core import inert, jobs
from core.jobs.targets import estimate
from core.training.estimate import Estimate
from core.training.progress import duration
from pages import _live, _plan_form
from pages._access import limits, viewer
from pages._data import choose_dataset, show_report


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


st.title("Train")

run_id = st.query_params.get("run")
if run_id:
    _live.show_run(run_id)
    st.stop()

dataset = choose_dataset()
if dataset is None:
    st.stop()
show_report(dataset)

plan = _plan_form.plan_form(dataset)
if plan is None:
    st.stop()
estimate_col, start_col = st.columns([3, 1])
estimates = st.session_state.setdefault("estimates", {})  # plan -> what was said: it stays on screen
plan_key = json.dumps(plan.to_dict(), sort_keys=True)
if estimate_col.button(
    "Estimate time",
    key="estimate",
    icon=":material/timer:",
    help="Times two real batches of your data, in a job, where the run would train (here, or a Ray node).",
):
    with st.spinner("Timing two batches..."):
        try:
            guess = estimate(plan.to_dict(), owner=viewer().owner, limits=limits())
            estimates[plan_key] = _estimate_text(guess, plan.case)
        except (RuntimeError, jobs.LimitExceeded) as exc:
            estimates[plan_key] = f"Could not estimate: {inert.markdown(exc)}"
if plan_key in estimates:
    said = estimates[plan_key]
    if said.startswith("Could not"):
        estimate_col.warning(said)
    else:
        estimate_col.info(said, icon=":material/timer:")
if start_col.button("Start training", type="primary", key="start", icon=":material/play_arrow:"):
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
