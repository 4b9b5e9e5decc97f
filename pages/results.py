"""Results: every run in a table, curves side by side, and one run in depth."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import streamlit as st

from core import inert, jobs
from core.artifacts import bundle
from core.data import stored_images
from core.jobs import Run, RunState
from core.training import outcome
from core.training.suspects import Suspects
from pages._access import limits, viewer
from pages._charts import confusion_heatmap, curves_by_run
from pages._check import check_on_labelled_zip
from pages._common import data_name, focus_run, plan_summary, run_label
from pages._heatmaps import results_heatmaps
from pages._retention import kept_until


@st.cache_resource(max_entries=8)
def train_again(run: Run, fields: dict) -> None:
    """Queue a run of ``run``'s data with ``fields`` as its plan, and follow it on Train."""
    try:
        new_run = jobs.submit(
            fields, dataset_name=run.record().dataset_name, owner=viewer().owner, limits=limits()
        )
    except jobs.LimitExceeded as exc:
        st.error(f"Not started: {exc}.", icon=":material/block:")
    else:
        st.switch_page("pages/train.py", query_params={"run": new_run})


def image_paths(data: str) -> dict[str, Path]:
    """Where each image of a run's data set lives, by the name metrics.json gives it: read from
    the data set's stored manifest once per server (hashing a sample zip, listing a folder)."""
    return stored_images(data)


st.title("Results")

runs = jobs.list_runs(viewer=viewer())
if not runs:
    st.info("No runs yet: start one on the **Train** page.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

labels = {r.run_id: run_label(r) for r in runs}
table = pd.DataFrame(runs)
table["data"] = [data_name(r) for r in runs]
table["minutes"] = ((table["finished"] - table["started"]) / 60).round(1)
table["worked"] = [
    None
    if r.best_val_accuracy is None
    else outcome.judge(r.best_val_accuracy, r.majority_rate or 0, {"case": r.case or 1}).worked
    for r in runs
]
st.dataframe(
    table[["data", "case", "backbone", "best_val_accuracy", "worked", "state", "minutes", "run_id"]],
    hide_index=True,
    width="stretch",
    key="results.runs",
    column_config={
        "data": "Data",
        "case": st.column_config.NumberColumn("Case", format="%d"),
        "backbone": "Backbone",
        "best_val_accuracy": st.column_config.ProgressColumn(
            "Best val accuracy", min_value=0.0, max_value=1.0, format="percent"
        ),
        "worked": st.column_config.CheckboxColumn(
            "Worked", help="Clearly beats always answering the most common class"
        ),
        "state": "State",
        "minutes": st.column_config.NumberColumn("Minutes", format="%.1f"),
        "run_id": "Run id",
    },
)

ids = table["run_id"].tolist()
finished = [r.run_id for r in runs if r.state is RunState.DONE]
compare = st.multiselect(
    "Compare runs", ids, default=finished[:3], format_func=labels.get, key="results.compare"
)
if compare:
    histories = {labels[run]: (Run.open(run, viewer()).metrics() or {}).get("history", []) for run in compare}
    st.plotly_chart(
        curves_by_run(histories),
        width="stretch",
        key="results.compare_chart",
        config={"displayModeBar": False},
    )

wanted = st.query_params.get("run") or focus_run()
chosen = st.selectbox(
    "Run in detail",
    ids,
    index=ids.index(wanted) if wanted in ids else 0,
    format_func=labels.get,
    key="results.detail",
)
focus_run(chosen)
run = Run.open(chosen, viewer())
metrics = run.metrics()
st.caption(f"{inert.markdown(plan_summary(run.plan_fields()))} · run id `{chosen}`")
mlflow_page = run.record().provenance.get("tracking", {}).get("mlflow", {}).get("url")
if mlflow_page:
    st.link_button("Open in MLflow", mlflow_page, key="results.mlflow", icon=":material/open_in_new:")
kept_until(run)
if metrics is None:
    st.info(f"This run has no results ({table.set_index('run_id').loc[chosen, 'state']}).")
    st.stop()

judged = outcome.judge_metrics(metrics)
cols = st.columns(4)
cols[0].metric("Best val accuracy", f"{metrics['best_val_accuracy']:.1%}")
cols[1].metric("Always the commonest class", f"{metrics['majority_rate']:.1%}")
cols[2].metric("Epochs", metrics["epochs_run"])
cols[3].metric("Device", f"{metrics['device']} · {metrics['precision']}")
if not judged.worked:
    st.error(judged.advice, icon=":material/error:")
if judged.suggest == outcome.FROM_SCRATCH and st.button(
    "Re-run from scratch", key="results.rerun_scratch", type="primary"
):
    train_again(run, {**run.plan_fields(), "weights": "none"})
if st.button("Try this model", key="results.try_model", icon=":material/image_search:"):
    st.switch_page("pages/predict.py", query_params={"run": chosen})

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Confusion matrix")
    st.plotly_chart(
        confusion_heatmap(metrics["confusion_matrix"], metrics["labels"]),
        width="stretch",
        key="results.confusion",
    )
with right:
    st.subheader("Per class")
    st.dataframe(
        pd.DataFrame(metrics["per_class"]).T.rename(index=inert.terminal),  # class names from an upload
        width="stretch",
        key="results.per_class",
        column_config={
            name: st.column_config.NumberColumn(name.capitalize(), format="percent")
            for name in ("precision", "recall", "f1")
        }
        | {"support": st.column_config.NumberColumn("Images", format="%d")},
    )
    if "test" in metrics:
        st.metric("Test accuracy (held-out test/ split)", f"{metrics['test']['accuracy']:.1%}")

st.subheader("Most confidently wrong")
wrong = [row for row in metrics["top_losses"] if row["true"] != row["predicted"]]
if not wrong:
    st.caption("No validation image was misclassified.")
else:
    paths = image_paths(metrics["plan"]["data"])
    columns = st.columns(6)
    for i, row in enumerate(wrong[:12]):
        with columns[i % 6]:
            if row["file"] in paths:
                st.image(str(paths[row["file"]]), width="stretch")
            st.caption(
                f"**{inert.markdown(row['predicted'])}** ({row['confidence']:.0%}), "
                f"truly {inert.markdown(row['true'])} · {inert.markdown(row['file'])}"
            )

st.subheader("Where the model looked")
st.caption("Grad-CAM heatmaps of the mistakes above and of a few validation images of each class.")
results_heatmaps(chosen, [row["file"] for row in wrong[:12]], key="results.heatmaps")

st.subheader("Images that look mislabelled")
SHOWN_SUSPECTS = 12  # the button leaves out every suspect, shown or not
suspects = Suspects.read(run.directory)
if suspects is None:
    st.caption("This run did not look for mislabelled images.")
elif not suspects.images:
    st.caption(f"None of the {suspects.checked} images checked looks mislabelled.")
else:
    st.caption(
        f"{len(suspects.images)} of {suspects.checked} images, judged by {suspects.source} (a model that "
        "did not train on them): each label is unlikely for its class while another class is likely"
        + (f"; the {SHOWN_SUSPECTS} least likely shown." if len(suspects.images) > SHOWN_SUSPECTS else ".")
    )
    paths = image_paths(metrics["plan"]["data"])
    columns = st.columns(6)
    for i, suspect in enumerate(suspects.images[:SHOWN_SUSPECTS]):
        with columns[i % 6]:
            if suspect.file in paths:
                st.image(str(paths[suspect.file]), width="stretch")
            st.caption(
                f"labelled **{inert.markdown(suspect.given)}** ({suspect.given_probability:.0%}), looks like "
                f"**{inert.markdown(suspect.suggested)}** ({suspect.suggested_probability:.0%}) · "
                f"{inert.markdown(suspect.file)}"
            )
    if st.button("Train again without them", key="results.drop_suspects", icon=":material/filter_alt_off:"):
        train_again(run, suspects.plan_without(run.plan_fields()))

st.subheader("Check it on other labelled images")
check_on_labelled_zip(chosen)

st.download_button(
    # Built when clicked, not on every rerun: a VGG bundle is half a gigabyte.
    "Download the model",
    data=functools.partial(bundle.model_bundle, run.directory),
    file_name=f"transfer-lab-{chosen}.zip",
    mime="application/zip",
    key="results.download",
    type="primary",
    icon=":material/download:",
)
st.caption("A zip of model.pt2, labels.json, preprocess.json and a README with a five-line Python snippet.")
