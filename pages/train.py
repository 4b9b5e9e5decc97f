"""Train: choose data, check the report, set the plan, start, and watch the run live."""

from __future__ import annotations

import streamlit as st

from core import jobs
from pages import _live, _plan_form
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
if st.button("Start training", type="primary", key="start", icon=":material/play_arrow:"):
    new_run = jobs.submit(plan.to_dict())
    st.query_params["run"] = new_run
    st.rerun()
