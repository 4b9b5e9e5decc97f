"""The Train page's plan step: every choice pre-filled, each with a word on when to change it."""

from __future__ import annotations

import streamlit as st

from core.advice import cases, why
from core.advice.cases import SizeReading
from core.data import Dataset
from core.data.samples import sample_for_digest
from core.models import catalog
from core.training.plan import AUGMENTATIONS, AUTO, SWITCH, Plan, PlanError
from core.training.resizing import size_schedule
from pages._access import limits
from pages._charts import backbone_diagram
from pages._common import advisor_answers, draft_plan, measurement, take_draft_changes

PLAN = "train.plan_"  # the Train page's plan widgets: train.plan_case, train.plan_backbone...
CASE_KEY = f"{PLAN}case"
ADVISED_FOR = f"{PLAN}case_advised_for"  # the data set and similarity the case was last advised for
SIMILARITY_KEY = f"{PLAN}similarity"
SIMILARITY_FOR = f"{PLAN}similarity_for"  # what the question last started from
SIMILARITY_LABELS = {"similar": "Similar", "different": "Different", "unsure": "Not sure"}
VAL_KEY, DEFAULT_VAL = f"{PLAN}val", 0.2

HELP = {
    "case": "From the Advisor: 1 and 2 freeze the pre-trained network (small data), 3 and 4 re-train it.",
    "backbone": "Bigger networks are more accurate and slower. Those marked 'download first' need "
    "`python -m core fetch-weights NAME` on a machine that can reach the internet.",
    "cut": "Case 2 keeps the network up to this stage. Earlier: more generic features, for data far from ImageNet.",
    "weights": "ImageNet: start from pre-trained weights. None: random init, case 4's fallback when "
    "pre-trained init does not give a successful model.",
    "epochs": "Passes over the training images. In cases 1 and 2 each epoch refines the new layer's "
    "fit and costs almost nothing; the fit stops by itself once it has converged.",
    "batch_size": "Images per step. Auto: 32 on a CPU; on a GPU (cases 3 and 4), the size that trains "
    "fastest, measured on the run's first steps, with the learning rate scaled to it. A GPU run that "
    "runs out of memory halves it by itself.",
    "lr": "Learning rate of the new layer. Case 3 trains the pre-trained layers at a tenth of it. "
    "Cases 1 and 2 need none: their new layer is fitted exactly on features computed once "
    "(L-BFGS, its weight decay chosen by cross-validation).",
    "image_size": "Pixels per side fed to the network. Smaller is faster; the weights were trained at the default.",
    "augment": "Random crops, flips and colour changes against over-fitting. Strong for small data sets.",
    "progressive_resizing": "Cases 3 and 4: the first epochs train on smaller images, which is faster, "
    "and the last ones at the full size; accuracy is always measured at the full size.",
    "val_fraction": "Share of images held out to measure accuracy, when the data has no val/ folder.",
}


def plan_form(dataset: Dataset) -> Plan | None:
    """A resolved plan for ``dataset`` from the widgets, or ``None`` with the reason shown.

    Every widget keeps its value for the session (across page switches); a widget's first value
    comes from the draft plan (Advisor, Backbones) or from the data set.
    """
    draft = draft_plan()
    _follow_the_draft()
    _why_this_case(dataset, draft)
    with st.container(border=True, key="train.plan_form"):
        st.subheader("Plan")
        left, middle, right = st.columns(3)
        case = left.radio(
            "Case",
            list(cases.CASES),
            format_func=lambda n: f"{n}: {cases.CASES[n].name}",
            key=CASE_KEY,
            persist_state="session",
            help=HELP["case"],
        )
        backbone = middle.selectbox(
            "Backbone",
            list(catalog.names()),
            format_func=_label_backbone,
            **_state(f"{PLAN}backbone", draft.get("backbone") or catalog.default_card().name),
            help=HELP["backbone"],
        )
        chosen = catalog.card(backbone)
        cut = None
        if case == 2:
            facts = {fact.path: fact for fact in chosen.stage_facts}
            cut = middle.selectbox(
                "Cut after",
                chosen.stages,
                format_func=lambda path: facts[path].label(),
                help=HELP["cut"],
                **_state(f"{PLAN}cut_{backbone}", chosen.default_cut),
            )
        weight_choice = middle.radio(
            "Weights",
            ["imagenet", "none"],
            horizontal=True,
            help=HELP["weights"],
            **_state(f"{PLAN}weights", draft.get("weights", "imagenet")),
        )
        min_size, exact = chosen.input_size_rule(case)
        ceilings = limits()
        largest = max(exact or 0, ceilings.max_image_size or 1024)  # an exact size is what the net needs
        image_size = right.number_input(
            "Image size (px)",
            min_value=max(min_size, 32),
            max_value=largest,
            step=16,
            help=HELP["image_size"],
            disabled=exact is not None,
            **_state(f"{PLAN}image_size_{backbone}", exact or chosen.preprocess.crop, largest),
        )
        most_epochs = ceilings.max_epochs or 500
        epochs = left.number_input(
            "Epochs",
            1,
            most_epochs,
            help=HELP["epochs"]
            + (f" This instance allows {most_epochs} at most." if ceilings.max_epochs else ""),
            **_state(f"{PLAN}epochs", draft.get("epochs", 10 if case <= 2 else 5), most_epochs),
        )
        batch_size = right.select_slider(
            "Batch size",
            [AUTO, 4, 8, 16, 32, 64, 128, 256],
            help=HELP["batch_size"],
            **_state(f"{PLAN}batch_size", draft.get("batch_size", AUTO)),
        )
        lr = right.select_slider(
            "Learning rate",
            [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
            format_func=lambda v: f"{v:g}",
            help=HELP["lr"],
            disabled=case <= 2,  # the new layer is fitted exactly: no step size to choose
            **_state(f"{PLAN}lr", draft.get("lr", 1e-3)),
        )
        augment = left.selectbox(
            "Augmentation",
            AUGMENTATIONS,
            help=HELP["augment"],
            **_state(f"{PLAN}augment", draft.get("augment", "light")),
        )
        progressive = left.selectbox(
            "Progressive resizing",
            SWITCH,
            help=HELP["progressive_resizing"],
            disabled=case <= 2,  # a frozen body computes its features once, at the full size
            **_state(f"{PLAN}progressive_resizing", draft.get("progressive_resizing", "on")),
        )
        val_fraction = right.slider(
            "Validation share",
            0.1,
            0.5,
            step=0.05,
            help=HELP["val_fraction"],
            disabled=not dataset.report.held_out_val,  # the data's own val/ folder decides
            **_state(VAL_KEY, DEFAULT_VAL),
        )
        if case == 2:
            st.plotly_chart(
                backbone_diagram(list(facts.values()), cut),
                width="stretch",
                key="train.cut_diagram",
                config={"displayModeBar": False},
            )
            st.caption(f"{backbone} cut after stage {facts[cut].index}: the kept stages stay frozen.")
    try:
        plan = Plan(
            data=str(dataset.root),
            backbone=backbone,
            case=case,
            cut=cut,
            weights=weight_choice,
            epochs=int(epochs),
            batch_size=batch_size if batch_size == AUTO else int(batch_size),
            lr=float(lr),
            image_size=int(image_size),
            augment=augment,
            progressive_resizing=progressive,
            val_fraction=float(val_fraction),
        ).resolve()
    except PlanError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    schedule = size_schedule(plan, catalog.card(plan.backbone))
    if schedule.progressive:
        st.caption(f"Image sizes: {schedule.describe()}.")
    return plan


def validation_share() -> float:
    """The share of images to hold out, as last set here: the data step splits with it, before
    the form is drawn."""
    return st.session_state.get(VAL_KEY, DEFAULT_VAL)


def _follow_the_draft() -> None:
    """Set the widgets to the choices another page has just handed on (the Advisor's case, a
    backbone from Backbones, the analysis's cut): each replaces what was chosen here before."""
    changes = take_draft_changes()
    backbone = changes.get("backbone") or st.session_state.get(f"{PLAN}backbone")
    for name, value in changes.items():
        st.session_state[f"{PLAN}cut_{backbone}" if name == "cut" else f"{PLAN}{name}"] = value


def _state(key: str, first_value: object, ceiling: int | None = None) -> dict[str, object]:
    """Widget arguments that give it ``first_value`` once and keep the user's choice after (or
    one handed on by another page, ``_follow_the_draft``), brought down to ``ceiling``."""
    st.session_state.setdefault(key, first_value)
    if ceiling is not None and st.session_state[key] > ceiling:
        st.session_state[key] = ceiling
    return {"key": key, "persist_state": "session"}


def _why_this_case(dataset: Dataset, draft: dict) -> None:
    """One line that says which case this data calls for and why, the similarity question it
    rests on, and a notice when the Advisor's case contradicts the data.

    The case radio follows the data: it is set again when the data set or the similarity answer
    changes, to the Advisor's case while the answer is the Advisor's, else to this data's case.
    """
    with st.container(key="train.case_reason"):
        line = st.empty()
        similarity, source, evidence = similarity_input(dataset, draft)
        images = max(dataset.report.num_images, len(dataset.classes))
        reason = why.case_reason(
            images,
            len(dataset.classes),
            similarity,
            source,
            evidence=evidence,
            size=_measured_size(dataset, source),
        )
        line.markdown(f":material/lightbulb: {reason.line}", help=reason.advice.rationale)
        advised_for = (dataset.report.source.get("sha256"), similarity)
        if st.session_state.get(ADVISED_FOR) != advised_for:
            st.session_state[ADVISED_FOR] = advised_for
            advisor_case = draft.get("case") if source == why.ADVISOR else None
            st.session_state[CASE_KEY] = advisor_case or reason.case
        answers = advisor_answers()
        notice = why.contradiction(draft.get("case"), reason, answers.images if answers else None)
        if notice is not None and st.session_state.get(CASE_KEY) == notice.advisor_case:
            st.warning(notice.message, icon=":material/compare_arrows:")
            if st.button(f"Use case {notice.data_case}", key="train.use_data_case"):
                st.session_state[CASE_KEY] = notice.data_case
                st.rerun()


def _measured_size(dataset: Dataset, source: str) -> SizeReading | None:
    """The size the Advisor's analysis measured for this data set, while its answer stands."""
    measured = measurement(dataset.report.source.get("sha256", ""))
    return measured.size if measured and source == why.MEASURED else None


def similarity_input(dataset: Dataset, draft: dict) -> tuple[str, str, str | None]:
    """How close the images are to ImageNet, where that answer came from (``why.SOURCES``), and
    for a measured one, what was measured.

    The question starts from the Advisor's measurement of this data set, if there is one, else
    from the Advisor's answer, if the user took its plan, else from what a sample is known to be,
    else "not sure"; it starts over when any of them changes.
    """
    digest = dataset.report.source.get("sha256", "")
    measured = measurement(digest)
    answers = advisor_answers()
    advisor = answers.similarity if answers else None
    sample = sample_for_digest(digest)
    evidence = None
    if measured:
        start, source = measured.verdict, why.MEASURED
        evidence = measured.cut_note
    elif advisor:
        start, source = advisor, why.ADVISOR
    elif sample is not None:
        start, source = sample.similarity, why.SAMPLE
    else:
        start, source = "unsure", why.ASKED
    origin = (dataset.report.source.get("sha256"), start)
    if st.session_state.get(SIMILARITY_FOR) != origin:
        st.session_state[SIMILARITY_FOR] = origin
        st.session_state[SIMILARITY_KEY] = start
    answer = st.radio(
        "How close are these images to ImageNet's photos?",
        list(SIMILARITY_LABELS),
        format_func=SIMILARITY_LABELS.get,
        horizontal=True,
        key=SIMILARITY_KEY,
        persist_state="session",
        help=cases.SIMILARITY_EXAMPLES["similar"] + " " + cases.SIMILARITY_EXAMPLES["different"],
    )
    if answer != start:
        return answer, why.ASKED, None
    return answer, source, evidence


def _label_backbone(name: str) -> str:
    card = catalog.card(name)
    if not card.on_disk():
        return f"{name} (download first)"
    return f"{name} (offline)" if card.packaged else f"{name} (on disk)"
