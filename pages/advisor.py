"""Advisor: which of the four transfer-learning cases fits your data set."""

import streamlit as st

from core.advice import cases, why
from pages import _analysis
from pages._charts import decision_matrix, network_diagram
from pages._common import AdvisorAnswers, hand_on_advisor_answers, update_draft_plan

IMAGE_STEPS = [n * 10**e for e in range(1, 8) for n in (1, 2, 5)][:-2]  # 10 ... 10,000,000
CLASS_STEPS = [n * 10**e for e in range(5) for n in (1, 2, 5)][1:-2]  # 2 ... 20,000
LINE_STEPS = [n * 10**e for e in range(2, 7) for n in (1, 2, 5)]  # 100 ... 5,000,000
SIMILARITY_LABELS = {"similar": "Similar", "different": "Different", "unsure": "Not sure"}
MODES = {"answer": "Answer two questions", "measure": "Measure my data"}

st.title("Which transfer-learning approach?")
st.write(
    "Two things decide how to adapt a network pre-trained on ImageNet: how much data you have, "
    "and how much it looks like ImageNet's photos."
)
followed = _analysis.ANALYSIS_PARAM in st.query_params or _analysis.RACE_PARAM in st.query_params
mode = st.segmented_control(
    "Advice from",
    list(MODES),
    format_func=MODES.get,
    default="measure" if followed else "answer",
    required=True,
    key="advisor.mode",
    help="Measuring runs pre-trained networks over a sample of your images, in a job on this server.",
)
if mode == "measure":
    _analysis.show()
    st.stop()

inputs, outputs = st.columns([1, 2], gap="large")
with inputs:
    num_images = st.select_slider(
        "Images in your data set",
        options=IMAGE_STEPS,
        value=2000,
        key="advisor.images",
        persist_state="session",
        format_func=lambda n: f"{n:,}",
        help="Log scale. Count all images over all classes.",
    )
    num_classes = st.select_slider(
        "Classes",
        options=CLASS_STEPS,
        value=5,
        key="advisor.classes",
        persist_state="session",
        format_func=lambda n: f"{n:,}",
    )
    similarity = st.radio(
        "Similar to ImageNet?",
        options=list(SIMILARITY_LABELS),
        key="advisor.similarity",
        persist_state="session",
        horizontal=True,
        format_func=SIMILARITY_LABELS.get,
        captions=None,
    )
    st.caption(cases.SIMILARITY_EXAMPLES[similarity])
    with st.expander("Where does *small* end?"):
        dividing_line = st.select_slider(
            "Dividing line (images)",
            options=LINE_STEPS,
            value=cases.DEFAULT_DIVIDING_LINE,
            key="advisor.dividing_line",
            persist_state="session",
            format_func=lambda n: f"{n:,}",
        )
        st.caption(
            "This line is subjective. Common guidance calls ~2,000 images small and ~1,000,000 large; "
            f"the default of {cases.DEFAULT_DIVIDING_LINE:,} sits between. Move it if your images "
            "are unusually varied (move it up) or very uniform (move it down)."
        )

if num_images < num_classes:
    outputs.error(f"{num_images:,} images cannot cover {num_classes:,} classes: add images or drop classes.")
    st.stop()

advice = cases.recommend(num_images, num_classes, similarity, dividing_line)
case = cases.CASES[advice.case]

with outputs:
    st.plotly_chart(
        decision_matrix(num_images, similarity, advice.case, dividing_line),
        width="stretch",
        config={"displayModeBar": False},
        key="advisor.matrix",
    )

with st.container(border=True, key="advisor.advice_card"):
    st.subheader(f"Case {advice.case}: {advice.name}")
    st.caption(
        f"{why.situation(advice, similarity)} · about {advice.thresholds['images_per_class']:,.0f} images per class"
    )
    left, right = st.columns([1, 1], gap="large")
    left.markdown("\n".join(f"{i}. {step}" for i, step in enumerate(advice.steps, 1)))
    right.markdown(f"**Why.** {advice.rationale}")
    if advice.alternatives:
        right.info(
            "Also worth a try: " + "; ".join(f"case {n} ({cases.CASES[n].name})" for n in advice.alternatives)
        )
    st.plotly_chart(
        network_diagram(case.to_dict()["layers"]),
        width="stretch",
        config={"displayModeBar": False},
        key="advisor.network",
    )
    if st.button("Use this plan", type="primary", key="advisor.use_plan", icon=":material/arrow_forward:"):
        update_draft_plan(case=advice.case)
        hand_on_advisor_answers(AdvisorAnswers(images=num_images, similarity=similarity))
        st.switch_page("pages/train.py")
