"""Train: choose data, check the report, set the plan, start, and watch the run live."""

from __future__ import annotations

import subprocess

import streamlit as st

from core import jobs
from core.training.estimate import estimate_in_subprocess
from core.training.progress import duration
from pages import _live, _plan_form
from pages._access import viewer
from pages._common import escape
from pages._data import choose_dataset, show_report

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
if estimate_col.button(
    "Estimate time",
    key="estimate",
    icon=":material/timer:",
    help="Times two real batches of your data on this machine.",
):
    with st.spinner("Timing two batches..."):
        try:
            guess = estimate_in_subprocess(plan.to_dict())
            prepared = (
                "decode images, compute features, fit the new layer" if plan.case <= 2 else "decode images"
            )
            estimate_col.info(
                f"About {duration(guess.total_s)} in all on {guess.device} ({guess.precision}): "
                f"{duration(guess.prepare_s)} to prepare ({prepared}), {duration(guess.epoch_s)} per epoch, "
                f"{duration(guess.export_s)} to export the model.",
                icon=":material/timer:",
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            estimate_col.warning(f"Could not estimate: {escape(exc)}")
if start_col.button("Start training", type="primary", key="start", icon=":material/play_arrow:"):
    new_run = jobs.submit(
        plan.to_dict(), dataset_name=dataset.report.source.get("name"), owner=viewer().owner
    )
    st.query_params["run"] = new_run
    st.rerun()
