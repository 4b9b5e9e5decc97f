"""The Train page's report of the picked data: counts, a few pictures of each class, what was
skipped, and what to watch out for. It reads what validation stored; it decodes nothing."""

from __future__ import annotations

import streamlit as st

from core import inert
from core.data import Dataset
from core.data.preview import GRID_CLASSES, SIZE, stored_previews
from pages._charts import counts_chart


def show_report(dataset: Dataset) -> None:
    """Counts per class, a few images of each, what was skipped, and what to watch out for."""
    report = dataset.report
    with st.container(border=True, key="train.report"):
        columns = st.columns(4)
        columns[0].metric("Classes", len(dataset.classes))
        columns[1].metric("Training images", len(dataset.train))
        columns[2].metric("Validation images", len(dataset.val))
        columns[3].metric("Skipped files", len(report.skipped))
        st.caption(f"Layout: {report.layout}. Validation split: {report.split}.")
        for warning in report.warnings:
            st.warning(inert.markdown(warning), icon=":material/warning:")
        with st.expander("Images per class, and a few of each", expanded=False):
            st.plotly_chart(
                counts_chart(report.counts),
                width="stretch",
                key="train.counts",
                config={"displayModeBar": False},
            )
            _image_grid(dataset)
        if report.skipped:
            with st.expander(f"{len(report.skipped)} skipped files"):
                st.dataframe(report.skipped, hide_index=True, width="stretch", key="train.skipped")


def _image_grid(dataset: Dataset) -> None:
    """Every class: a row of examples each while there are few classes, one example each beyond.
    The pictures are the small previews made when the data was validated: the page decodes none."""
    shown = stored_previews(dataset.work) if dataset.work else None
    if shown is None:
        st.caption(
            "No pictures: this data set was checked before previews were kept. Upload it again to see some."
        )
        return
    if len(shown) > GRID_CLASSES:
        kept = [entry for entry in shown if entry.files]
        st.image(
            [str(entry.files[0]) for entry in kept],
            width=SIZE,
            caption=[inert.markdown(e.label) for e in kept],
        )
        return
    for entry in shown:
        st.markdown(f"**{inert.markdown(entry.label)}**")
        st.image([str(file) for file in entry.files], width=SIZE)
