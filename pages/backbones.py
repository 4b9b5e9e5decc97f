"""Backbones: compare the pre-trained networks by accuracy, cost and size, then pick one."""

import pandas as pd
import streamlit as st

from core.models import catalog
from core.models.families import FAMILIES
from pages._charts import accuracy_vs_cost, imagenet_history
from pages._common import draft_plan, update_draft_plan


def load_catalog() -> pd.DataFrame:
    """The catalog's rows, where each backbone's weights stand as of this run (not cached:
    weights arrive while the server runs)."""
    with st.spinner("Describing every backbone: once per torch version, about half a minute..."):
        cards = catalog.cards()
    table = pd.DataFrame([card.summary() for card in cards])
    table["usable"] = table["on_disk"] | table["offline"]
    table["weights_here"] = [weights_badge(row) for row in table.to_dict("records")]
    return table


def weights_badge(row: dict) -> str:
    """Where a backbone's weights stand on this server, and the command that fetches them."""
    if row["offline"]:
        return "ready (in a package)"
    if row["on_disk"]:
        return "ready (on disk)"
    return f"fetch-weights {row['name']}"


st.title("Which network?")
st.write(
    "Every classifier torchvision ships, with the numbers from its own pre-trained weights. "
    "Accuracy is ImageNet's; a smaller network may fit your problem better, and trains faster."
)

table = load_catalog()
filters = st.columns([2, 2, 1])
families = filters[0].multiselect(
    "Family", sorted(table["family"].unique()), key="backbones.families", persist_state="session"
)
query = filters[1].text_input(
    "Search by name", key="backbones.query", persist_state="session", placeholder="e.g. resnet"
)
# Most servers cannot download weights: the page opens on the backbones that train here.
st.session_state.setdefault("backbones.available_only", True)
available_only = filters[2].toggle(
    "Ready to train here",
    key="backbones.available_only",
    persist_state="session",
    help="Weights in an installed package or already on disk. The others need "
    "`python -m core fetch-weights NAME` on a machine that can reach the internet.",
)

shown = table
if families:
    shown = shown[shown["family"].isin(families)]
if query:
    shown = shown[shown["name"].str.contains(query.strip(), case=False, regex=False)]
if available_only:
    shown = shown[shown["usable"]]

waiting = int((~table["usable"]).sum())
st.caption(
    f"{len(shown)} of {len(table)} backbones"
    + (f" · {waiting} need their weights downloaded first" if waiting else "")
    + (" (turn off *Ready to train here* to see them)" if available_only and waiting else "")
    + (
        " · fetch them with `python -m core fetch-weights NAME` where the internet is reachable"
        if waiting
        else ""
    )
)
st.dataframe(
    shown.assign(params=shown["params"] / 1e6),
    key="backbones.catalog",
    hide_index=True,
    width="stretch",
    column_order=[
        "name",
        "family",
        "top1",
        "top5",
        "params",
        "gflops",
        "file_size_mb",
        "input_size",
        "weights_here",
    ],
    column_config={
        "name": st.column_config.TextColumn("Backbone", pinned=True, width=140),
        "family": st.column_config.TextColumn("Family", width=110),
        "top1": st.column_config.ProgressColumn(
            "Top-1 %", min_value=50, max_value=90, format="%.1f", width=95
        ),
        "top5": st.column_config.NumberColumn("Top-5 %", format="%.1f", width=70),
        "params": st.column_config.NumberColumn("Params (M)", format="%.1f", width=80),
        "gflops": st.column_config.NumberColumn("GFLOPs", format="%.2f", width=70),
        "file_size_mb": st.column_config.NumberColumn(
            "MB", format="%.0f", width="small", help="Weights file"
        ),
        "input_size": st.column_config.NumberColumn(
            "Input px", help="Crop size the weights expect", width="small"
        ),
        "weights_here": st.column_config.TextColumn(
            "Weights here",
            help="Ready, or `python -m core fetch-weights NAME` where the internet is reachable",
            width=220,
        ),
    },
)

names = table["name"].tolist()
current = draft_plan().get("backbone") or catalog.default_card().name
pick = st.session_state.get("backbones.pick", current)

st.subheader("Accuracy against cost")
st.plotly_chart(
    accuracy_vs_cost(shown.to_dict("records"), chosen=pick), width="stretch", key="backbones.scatter"
)
st.caption("Each bubble's area is proportional to its parameter count; the ringed one is your pick.")

st.subheader("Pick a backbone")
pick = st.selectbox(
    "Backbone for training", names, index=names.index(current), key="backbones.pick", persist_state="session"
)
picked = table.set_index("name").loc[pick]
st.caption(f"{picked['family']} · {picked['params'] / 1e6:.1f}M parameters · input {picked['input_size']} px")
if not picked["usable"]:
    st.warning(
        f"{pick}'s weights are not on this server, so it cannot train here yet. Fetch them on a "
        f"machine that can reach the internet: `python -m core fetch-weights {pick}`, or pick one "
        "marked ready.",
        icon=":material/cloud_off:",
    )
if st.button(
    "Use this backbone", type="primary", key="backbones.use_backbone", icon=":material/arrow_forward:"
):
    update_draft_plan(backbone=pick)
    st.switch_page("pages/train.py")

st.subheader("A short history of ImageNet")
st.caption(
    "Top-5 error in the ILSVRC classification competition as reported at the time, next to "
    "torchvision's own checkpoints of the same architectures (trained and evaluated differently)."
)
st.plotly_chart(imagenet_history(catalog.history()), width="stretch", key="backbones.history")
with st.expander("Family notes", expanded=True):
    for family in FAMILIES:
        st.markdown(f"**{family.name}** ({family.paper.year}). {family.note}")
