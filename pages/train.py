"""Train: the plan carried from the Advisor and Backbones pages."""

import streamlit as st

from core import cases
from pages._common import draft_plan

st.title("Train")
plan = draft_plan()
if not plan:
    st.info("No plan yet: pick a case on the **Advisor** page and a network on the **Backbones** page.")
else:
    with st.container(border=True, key="draft_plan_card"):
        if "case" in plan:
            st.subheader(f"Case {plan['case']}: {cases.CASES[plan['case']].name}")
        if "backbone" in plan:
            st.markdown(f"Backbone: **{plan['backbone']}**")
        st.json(plan, expanded=False)
st.caption("Uploading a data set and training in the browser arrive with the training engine.")
