"""Results: every run in a table, curves side by side, and one run in depth."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import streamlit as st

from core import jobs
from core.artifacts import bundle
from core.data import IngestError, ingest
from core.jobs import Run
from pages._access import viewer
from pages._charts import confusion_heatmap, curves_by_run
from pages._common import escape


@st.cache_resource(max_entries=8)
def image_paths(data: str, val_fraction: float, seed: int) -> dict[str, Path]:
    """Where each image of a run's data set lives, by the name metrics.json gives it."""
    try:
        dataset = ingest(data, val_fraction=val_fraction, seed=seed)
    except IngestError:
        return {}
    return {s.name or s.path.name: s.path for s in dataset.train + dataset.val + dataset.test}


st.title("Results")

runs = jobs.list_runs(viewer=viewer())
if not runs:
    st.info("No runs yet: start one on the **Train** page.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

table = pd.DataFrame(runs)
table["data"] = table["data"].fillna("").map(lambda p: p.rstrip("/").rsplit("/", 1)[-1])
table["minutes"] = ((table["finished"] - table["started"]) / 60).round(1)
st.dataframe(
    table[["run_id", "state", "backbone", "case", "data", "best_val_accuracy", "minutes"]],
    hide_index=True,
    width="stretch",
    key="runs",
    column_config={
        "run_id": "Run",
        "best_val_accuracy": st.column_config.ProgressColumn(
            "Best val accuracy", min_value=0.0, max_value=1.0, format="percent"
        ),
        "minutes": st.column_config.NumberColumn("Minutes", format="%.1f"),
    },
)

ids = table["run_id"].tolist()
finished = [r["run_id"] for r in runs if r["state"] == "done"]
compare = st.multiselect("Compare runs", ids, default=finished[:3], key="compare")
if compare:
    histories = {run: (Run.open(run, viewer()).metrics() or {}).get("history", []) for run in compare}
    st.plotly_chart(curves_by_run(histories), width="stretch", key="compare_chart")

wanted = st.query_params.get("run")
chosen = st.selectbox("Run in detail", ids, index=ids.index(wanted) if wanted in ids else 0, key="detail")
run = Run.open(chosen, viewer())
metrics = run.metrics()
if metrics is None:
    st.info(f"Run {chosen} has no results ({table.set_index('run_id').loc[chosen, 'state']}).")
    st.stop()

cols = st.columns(4)
cols[0].metric("Best val accuracy", f"{metrics['best_val_accuracy']:.1%}")
cols[1].metric("Always the commonest class", f"{metrics['majority_rate']:.1%}")
cols[2].metric("Epochs", metrics["epochs_run"])
cols[3].metric("Device", f"{metrics['device']} · {metrics['precision']}")

if metrics.get("suggest") == "from_scratch":
    st.warning(
        "Pre-trained init did not give a successful model. The course's fallback for case 4 "
        "is to train from scratch.",
        icon=":material/restart_alt:",
    )
    if st.button("Re-run from scratch", key="rerun_scratch", type="primary"):
        new_run = jobs.submit(
            {**run.plan_fields(), "weights": "none"},
            dataset_name=run.record().dataset_name,
            owner=viewer().owner,
        )
        st.switch_page("pages/train.py", query_params={"run": new_run})

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Confusion matrix")
    st.plotly_chart(
        confusion_heatmap(metrics["confusion_matrix"], metrics["labels"]), width="stretch", key="confusion"
    )
with right:
    st.subheader("Per class")
    st.dataframe(pd.DataFrame(metrics["per_class"]).T, width="stretch", key="per_class")
    if "test" in metrics:
        st.metric("Test accuracy (held-out test/ split)", f"{metrics['test']['accuracy']:.1%}")

st.subheader("Most confidently wrong")
wrong = [row for row in metrics["top_losses"] if row["true"] != row["predicted"]]
if not wrong:
    st.caption("No validation image was misclassified.")
else:
    plan = metrics["plan"]
    paths = image_paths(plan["data"], plan["val_fraction"], plan["seed"])
    columns = st.columns(6)
    for i, row in enumerate(wrong[:12]):
        with columns[i % 6]:
            if row["file"] in paths:
                st.image(str(paths[row["file"]]), width="stretch")
            st.caption(
                f"**{escape(row['predicted'])}** ({row['confidence']:.0%}), "
                f"truly {escape(row['true'])} · {escape(row['file'])}"
            )

st.download_button(
    # Built when clicked, not on every rerun: a VGG bundle is half a gigabyte.
    "Download the model",
    data=functools.partial(bundle.model_bundle, run.directory),
    file_name=f"transfer-lab-{chosen}.zip",
    mime="application/zip",
    key="download",
    type="primary",
    icon=":material/download:",
)
st.caption("A zip of model.pt2, labels.json, preprocess.json and a README with a five-line Python snippet.")
