"""Train: choose data, check the report, set the plan, start, and watch the run live."""

from __future__ import annotations

import json

import streamlit as st

from core import inert, jobs
from core.jobs.estimate import estimate
from core.training.estimated import Estimate
from core.training.progress import duration
from pages import _live, _plan_form
from pages._access import limits, viewer
from pages._data import choose_dataset
from pages._report import show_report


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

dataset = choose_dataset("train", _plan_form.validation_share())
if dataset is None:
    st.stop()
show_report(dataset)

plan = _plan_form.plan_form(dataset)
if plan is None:
    st.stop()
estimate_col, start_col = st.columns([3, 1])
# plan -> its estimate, or why there is none: it stays on screen while the plan does
estimates: dict[str, Estimate | str] = st.session_state.setdefault("train.estimates", {})
plan_key = json.dumps(plan.to_dict(), sort_keys=True)
if estimate_col.button(
    "Estimate time",
    key="train.estimate",
    icon=":material/timer:",
    help="Times two real batches of your data, in a job, where the run would train (here, or a Ray node).",
):
    with st.spinner("Timing two batches..."):
        try:
            estimates[plan_key] = estimate(plan.to_dict(), owner=viewer().owner, limits=limits())
        except (RuntimeError, jobs.LimitExceeded) as exc:
            estimates[plan_key] = str(exc)
said = estimates.get(plan_key)
if isinstance(said, Estimate):
    estimate_col.info(_estimate_text(said, plan.case), icon=":material/timer:")
elif said is not None:
    estimate_col.warning(f"Could not estimate: {inert.markdown(said)}")
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
