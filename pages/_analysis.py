"""The Advisor's "Measure my data" part: analyse a data set in a job, show the numbers, carry the
plan to Train, and race the plans to check the advice.

The analysis and the race are jobs (``core.jobs``), named in the URL (``?analysis=``,
``?race=``), so a reload or a shared link finds them again.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import inert, jobs
from core.advice import cases
from core.analysis.record import AnalysisRecord
from core.experiments import race as races
from core.jobs import analysis
from core.jobs.run import RunNotFound
from core.limits import LimitExceeded
from core.models.catalog import cards
from core.storage import Damaged
from core.training.plan import PlanError
from pages import _analysis_charts as charts
from pages._access import limits, viewer
from pages._charts import decision_matrix
from pages._common import record_measurement, update_draft_plan
from pages._data import choose_dataset
from pages._jobs import progress_card

ANALYSIS_PARAM, RACE_PARAM = "analysis", "race"
POLL_SECONDS = 1.0
PHASES = {
    "decoding": "Decoding the sample",
    "features": "Running the backbones",
    "scoring": "Scoring the backbones and stages",
}


def show() -> None:
    """The analysis the URL names, or the data picker and the button that starts one."""
    job_id = st.query_params.get(ANALYSIS_PARAM)
    if job_id:
        _show_job(job_id)
        return
    dataset = choose_dataset("advisor")
    if dataset is None:
        return
    with st.form("advisor.analyse", border=True):
        st.caption(
            "Runs pre-trained networks over a sample of your images: how far they move ImageNet's "
            "statistics, how well each backbone's features separate your classes, and where to cut."
        )
        left, right = st.columns(2)
        sample = left.slider("Images to analyse", 20, 1000, 200, step=10, key="advisor.analysis_sample")
        usable = [card.name for card in cards() if card.on_disk()]
        chosen = right.multiselect(
            "Backbones to rank", usable, default=usable, key="advisor.analysis_backbones",
            help="Those with weights on this machine. EfficientNet-Lite0 always runs: the similarity is measured with it.",
        )  # fmt: skip
        if st.form_submit_button("Analyse my data", type="primary", icon=":material/query_stats:"):
            name = dataset.report.source.get("name", "data")
            options = {"sample": sample, "backbones": chosen}
            try:
                job_id = analysis.submit_analysis(dataset.root, name, options, viewer().owner, limits())
            except LimitExceeded as exc:
                st.error(f"Not started: {exc}.", icon=":material/block:")
                return
            st.query_params[ANALYSIS_PARAM] = job_id
            st.rerun()


def _show_job(job_id: str) -> None:
    try:
        status = jobs.status(job_id, viewer())
    except RunNotFound:
        st.warning("No such analysis: it may have been deleted. Start a new one.", icon=":material/help:")
        _new_analysis_button()
        return
    if status.state.active:
        _follow(job_id)
        return
    result = analysis.analysis_result(job_id, viewer())
    if isinstance(result, Damaged):
        st.error(
            f"The analysis's result cannot be read: {inert.markdown(str(result))}", icon=":material/block:"
        )
        _new_analysis_button()
        return
    if result is None:
        message = status.message or f"the analysis {status.state}"
        st.error(f"The analysis did not finish: {inert.markdown(message)}", icon=":material/block:")
        _new_analysis_button()
        return
    _show_result(result)


@st.fragment(run_every=POLL_SECONDS)
def _follow(job_id: str) -> None:
    """The job's progress, polled; the page reruns once it has ended."""
    if jobs.reconcile(job_id, viewer()).state.final:
        st.rerun()
    progress_card(job_id, key="advisor.analysis_progress", phases=PHASES, waiting="Starting")


def _show_result(result: AnalysisRecord) -> None:
    advice, data, shift = result.advice, result.dataset, result.shift_type
    st.subheader(f"{inert.markdown(data.name)}: case {advice.case}, {advice.name}")
    st.markdown(f"**Plan.** {inert.markdown(result.plan)}")
    if shift.words:  # results stored before the shift was read have none
        words = inert.markdown(shift.words)
        st.markdown(f"**Shift.** {words[0].upper()}{words[1:]}.")
    figures = st.columns([1, 1, 1, 2])
    figures[0].metric("Plan", f"case {advice.case}", help=_planned_help(result))
    figures[1].metric("Shift from ImageNet", _SHIFT_NAMES[shift.kind], help=_SHIFT_HELP)
    figures[2].metric(
        "Images", f"{data.images:,}", help=f"{data.images_per_class:,.0f} per class; measured {result.size.size}"
    )  # fmt: skip
    figures[3].metric("Backbone", result.backbone)
    notes = _uncertainty(result)
    if notes:
        st.info(" ".join(notes), icon=":material/balance:")
    left, right = st.columns(2)
    left.plotly_chart(
        decision_matrix(data.images, result.verdict, advice.case, advice.thresholds["dividing_line"]),
        key="advisor.measured_matrix", config={"displayModeBar": False},
    )  # fmt: skip
    if (planned := result.planned_stage) is not None:
        right.plotly_chart(
            charts.stage_curve(result.stage_scores, planned.stage),
            key="advisor.stage_chart",
            config={"displayModeBar": False},
        )
    left.plotly_chart(
        charts.learning_curve(result.learning_curve),
        key="advisor.curve_chart",
        config={"displayModeBar": False},
    )
    right.plotly_chart(
        charts.shift_by_depth(result.evidence), key="advisor.shift_chart", config={"displayModeBar": False}
    )
    left.plotly_chart(
        charts.backbone_ranking(result.backbone_ranking),
        key="advisor.ranking_chart",
        config={"displayModeBar": False},
    )
    left.caption(f"{inert.markdown(result.ranking_note)}. Images/s on this machine: " + ", ".join(
        f"{e.name} {e.images_per_s:,.0f}" for e in result.backbone_ranking))  # fmt: skip
    st.markdown(f"**Why this case.** {inert.markdown(advice.rationale)}")
    for skipped in result.skipped:
        st.caption(f":material/timer_off: {inert.markdown(skipped)}")
    buttons = st.columns([1, 1, 2])
    if buttons[0].button(
        "Use this plan", type="primary", key="advisor.use_measured_plan", icon=":material/arrow_forward:"
    ):
        _use_plan(result)
    _race_controls(result, buttons[1])


# Short enough for a metric's width; the sentence above the metrics says it in full.
_SHIFT_NAMES = {"none": "none", "input": "the look", "content": "content"}
_SHIFT_HELP = (
    "Read off how far your images move the BatchNorm statistics of EfficientNet-Lite0, layer by "
    "layer: a shift that stands out in the first layers is one of the look (colour, contrast, grey "
    "scale, texture); one that grows with depth is one of content. It explains the plan; the "
    "accuracy of the new layer on each option decides it."
)


def _planned_help(result: AnalysisRecord) -> str:
    planned = result.planned_stage
    head = None if planned is None else planned.head_accuracy
    if head is None:
        return "Too few images per class to cross-validate the new layer."
    return (
        f"The new layer scores {head.value:.0%} ({head.low:.0%}-{head.high:.0%}) held out on these features."
    )


def _uncertainty(result: AnalysisRecord) -> list[str]:
    advice = result.advice
    notes = []
    if advice.alternatives:
        names = "; ".join(f"case {n} ({cases.CASES[n].name})" for n in advice.alternatives)
        notes.append(f"The numbers leave room: also worth a try, {names}.")
    if not result.ranked_by_evidence:
        notes.append(f"Backbones: {inert.markdown(result.ranking_note)}.")
    return notes


def _use_plan(result: AnalysisRecord) -> None:
    """Carry case, backbone and cut to the Train page, with the measured verdict."""
    update_draft_plan(case=result.advice.case, backbone=result.backbone, cut=result.cut)
    record_measurement(result.dataset.sha256, result)
    st.switch_page("pages/train.py")


def _race_controls(result: AnalysisRecord, column: Any) -> None:
    race_id = st.query_params.get(RACE_PARAM)
    race = races.Race.load(race_id, viewer()) if race_id else None
    if race is None:
        epochs = column.number_input("Race epochs", 1, 50, 3, key="advisor.race_epochs")
        if column.button("Race the plans", key="advisor.start_race", icon=":material/sports_score:"):
            try:
                started = races.start_race(
                    result, result.data, epochs=int(epochs), owner=viewer().owner, limits=limits()
                )
            except (LimitExceeded, PlanError) as exc:
                column.error(f"Not started: {exc}.", icon=":material/block:")
                return
            st.query_params[RACE_PARAM] = started.race_id
            st.rerun()
        return
    _follow_race(race)


@st.fragment(run_every=POLL_SECONDS * 2)
def _follow_race(race: races.Race) -> None:
    standing = races.advance(race, viewer())
    contenders = standing.to_record().contenders
    with st.container(border=True, key="advisor.race"):
        st.markdown(f"**Race:** {inert.markdown(standing.summary)}")
        if any(entry.accuracy is not None for entry in contenders):
            st.plotly_chart(
                charts.race_chart(contenders), key="advisor.race_chart", config={"displayModeBar": False}
            )
        st.caption(
            f"The frozen options score by their new layer's cross-validated fit on the analysis's features; "
            f"each fine-tune trains {races.REPEATS} times as ordinary runs at a reduced image size, judged on "
            f"{standing.judged_on} accuracy. A gap within the larger spread is a tie; after each epoch, a "
            f"fine-tune the leader beats is dropped."
        )


def _new_analysis_button() -> None:
    if st.button("New analysis", key="advisor.new_analysis", icon=":material/add:"):
        del st.query_params[ANALYSIS_PARAM]
        st.rerun()
